package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/syncapi/push"
)

// pushError maps the push service's errors to Matrix errors.
func pushError(err error) error {
	var inv *push.ErrInvalid
	switch {
	case err == nil:
		return nil
	case errors.As(err, &inv):
		return httputil.InvalidParam("%s", inv.Msg)
	case errors.Is(err, push.ErrNotFound):
		return httputil.NotFound("Push rule not found")
	case errors.Is(err, push.ErrDefaultRule):
		return httputil.InvalidParam("Server-default push rules cannot be deleted")
	case errors.Is(err, push.ErrBadToken):
		return httputil.InvalidParam("Invalid from token")
	}
	return err
}

// pushRuleTarget reads the scope, kind and rule ID of /pushrules/{scope}/{kind}/{ruleId}.
func pushRuleTarget(r *http.Request) (push.Kind, string, error) {
	if scope := pathVar(r, "scope"); scope != "global" {
		return "", "", httputil.InvalidParam("Unknown push rule scope %q", scope)
	}
	kind, ok := push.ParseKind(pathVar(r, "kind"))
	if !ok {
		return "", "", httputil.InvalidParam("Unknown push rule kind %q", pathVar(r, "kind"))
	}
	return kind, pathVar(r, "ruleId"), nil
}

// getPushRules serves GET /pushrules/ (all rulesets) and GET /pushrules/global/.
func (s *Server) getPushRules(r *http.Request) (any, error) {
	rs, err := s.push.Rules(r.Context(), requestDevice(r).UserID)
	if err != nil {
		return nil, err
	}
	if _, scoped := mustVar(r, "scope"); scoped {
		if pathVar(r, "scope") != "global" {
			return nil, httputil.InvalidParam("Unknown push rule scope")
		}
		return rs, nil
	}
	return map[string]any{"global": rs}, nil
}

func mustVar(r *http.Request, name string) (string, bool) {
	v := pathVar(r, name)
	return v, v != ""
}

// getPushRule serves GET /pushrules/global/{kind}/{ruleId}. A rule of a kind this server
// does not have (e.g. MSC4306's postcontent) is simply not found: clients probe for them.
func (s *Server) getPushRule(r *http.Request) (any, error) {
	if _, known := push.ParseKind(pathVar(r, "kind")); !known && pathVar(r, "scope") == "global" {
		return nil, httputil.NotFound("Push rule not found")
	}
	kind, id, err := pushRuleTarget(r)
	if err != nil {
		return nil, err
	}
	rs, err := s.push.Rules(r.Context(), requestDevice(r).UserID)
	if err != nil {
		return nil, err
	}
	rule := rs.Find(kind, id)
	if rule == nil {
		return nil, httputil.NotFound("Push rule not found")
	}
	return rule, nil
}

// putPushRule serves PUT /pushrules/global/{kind}/{ruleId}.
func (s *Server) putPushRule(r *http.Request) (any, error) {
	kind, id, err := pushRuleTarget(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Actions    []json.RawMessage `json:"actions"`
		Conditions []push.Condition  `json:"conditions"`
		Pattern    *string           `json:"pattern"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, httputil.MissingParam("actions is required")
	}
	rule, err := push.NewRule(kind, id, body.Actions, body.Conditions, body.Pattern)
	if err != nil {
		return nil, pushError(err)
	}
	q := r.URL.Query()
	if err := s.push.PutRule(r.Context(), requestDevice(r).UserID, kind, rule, q.Get("before"), q.Get("after")); err != nil {
		if errors.Is(err, push.ErrNotFound) {
			return nil, httputil.NotFound("The before/after rule was not found")
		}
		return nil, pushError(err)
	}
	return s.pushRulesChanged(r)
}

// deletePushRule serves DELETE /pushrules/global/{kind}/{ruleId}.
func (s *Server) deletePushRule(r *http.Request) (any, error) {
	kind, id, err := pushRuleTarget(r)
	if err != nil {
		return nil, err
	}
	if err := s.push.DeleteRule(r.Context(), requestDevice(r).UserID, kind, id); err != nil {
		return nil, pushError(err)
	}
	return s.pushRulesChanged(r)
}

// getPushRuleAttr serves GET /pushrules/global/{kind}/{ruleId}/{enabled,actions}.
func (s *Server) getPushRuleAttr(r *http.Request) (any, error) {
	res, err := s.getPushRule(r)
	if err != nil {
		return nil, err
	}
	rule := res.(*push.Rule)
	if pathVar(r, "attr") == "enabled" {
		return map[string]bool{"enabled": rule.Enabled}, nil
	}
	actions := rule.Actions
	if actions == nil {
		actions = []json.RawMessage{}
	}
	return map[string]any{"actions": actions}, nil
}

// putPushRuleAttr serves PUT /pushrules/global/{kind}/{ruleId}/{enabled,actions}.
func (s *Server) putPushRuleAttr(r *http.Request) (any, error) {
	kind, id, err := pushRuleTarget(r)
	if err != nil {
		return nil, err
	}
	userID := requestDevice(r).UserID
	if pathVar(r, "attr") == "enabled" {
		var body struct {
			Enabled *bool `json:"enabled"`
		}
		if err := httputil.DecodeJSON(r, &body); err != nil {
			return nil, err
		}
		if body.Enabled == nil {
			return nil, httputil.MissingParam("enabled is required")
		}
		if err := s.push.SetEnabled(r.Context(), userID, kind, id, *body.Enabled); err != nil {
			return nil, pushError(err)
		}
		return s.pushRulesChanged(r)
	}
	var body struct {
		Actions []json.RawMessage `json:"actions"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, httputil.MissingParam("actions is required")
	}
	if err := s.push.SetActions(r.Context(), userID, kind, id, body.Actions); err != nil {
		return nil, pushError(err)
	}
	return s.pushRulesChanged(r)
}

// pushRulesChanged wakes the user's /sync long-polls after a rule change (the rules are
// m.push_rules account data) and answers the request.
func (s *Server) pushRulesChanged(r *http.Request) (any, error) {
	s.sync.OnAccountData(requestDevice(r).UserID)
	return struct{}{}, nil
}
