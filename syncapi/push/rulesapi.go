package push

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/myelin-chat/myelin/storage"
)

// ErrDefaultRule is returned when deleting a server-default rule.
var ErrDefaultRule = errors.New("server-default rules cannot be deleted")

// Rules returns a user's whole ruleset (defaults merged in), read from the database.
func (s *Service) Rules(ctx context.Context, userID string) (*Ruleset, error) {
	ur, err := loadUserRules(ctx, s.db, userID)
	if err != nil {
		return nil, err
	}
	return Build(userID, ur), nil
}

func loadUserRules(ctx context.Context, q storage.Querier, userID string) (*UserRules, error) {
	doc, err := storage.GetPushRules(ctx, q, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return &UserRules{}, nil
	}
	if err != nil {
		return nil, err
	}
	ur := &UserRules{}
	if err := json.Unmarshal([]byte(doc), ur); err != nil {
		return &UserRules{}, nil
	}
	return ur, nil
}

// modify runs a read-modify-write of a user's rules in one transaction and publishes
// the new ruleset as m.push_rules account data (for /sync).
func (s *Service) modify(ctx context.Context, userID string, fn func(u *UserRules, current *Ruleset) error) error {
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.LockPushRules(ctx, tx, userID); err != nil {
			return err
		}
		u, err := loadUserRules(ctx, tx, userID)
		if err != nil {
			return err
		}
		if err := fn(u, Build(userID, u)); err != nil {
			return err
		}
		doc, err := json.Marshal(u)
		if err != nil {
			return err
		}
		if err := storage.PutPushRules(ctx, tx, userID, string(doc)); err != nil {
			return err
		}
		ad, err := Build(userID, u).AccountData()
		if err != nil {
			return err
		}
		_, err = storage.PutAccountData(ctx, tx, userID, "", "m.push_rules", ad)
		return err
	})
	s.rules.forget(userID)
	return err
}

// PutRule creates or updates a user-defined rule; before and after (rule IDs of user
// rules of the same kind) position it.
func (s *Service) PutRule(ctx context.Context, userID string, kind Kind, rule *StoredRule, before, after string) error {
	return s.modify(ctx, userID, func(u *UserRules, _ *Ruleset) error {
		if u.Rules == nil {
			u.Rules = map[Kind][]*StoredRule{}
		}
		list := u.Rules[kind]
		idx := slices.IndexFunc(list, func(r *StoredRule) bool { return r.RuleID == rule.RuleID })
		if idx >= 0 {
			rule.Enabled = list[idx].Enabled
		}
		anchor := ""
		if before != "" {
			anchor = before
		} else if after != "" {
			anchor = after
		}
		if anchor == "" {
			if idx >= 0 {
				list[idx] = rule
			} else {
				list = append([]*StoredRule{rule}, list...)
			}
			u.Rules[kind] = list
			return nil
		}
		if len(anchor) > 0 && anchor[0] == '.' {
			return invalid("rules cannot be placed relative to server-default rules")
		}
		if anchor == rule.RuleID {
			return invalid("a rule cannot be placed relative to itself")
		}
		if idx >= 0 {
			list = slices.Delete(list, idx, idx+1)
		}
		at := slices.IndexFunc(list, func(r *StoredRule) bool { return r.RuleID == anchor })
		if at < 0 {
			return ErrNotFound
		}
		if before == "" {
			at++
		}
		u.Rules[kind] = slices.Insert(list, at, rule)
		return nil
	})
}

// DeleteRule deletes a user-defined rule.
func (s *Service) DeleteRule(ctx context.Context, userID string, kind Kind, ruleID string) error {
	return s.modify(ctx, userID, func(u *UserRules, cur *Ruleset) error {
		r := cur.Find(kind, ruleID)
		if r == nil {
			return ErrNotFound
		}
		if r.Default {
			return ErrDefaultRule
		}
		u.Rules[kind] = slices.DeleteFunc(u.Rules[kind], func(s *StoredRule) bool { return s.RuleID == ruleID })
		return nil
	})
}

// SetEnabled enables or disables a rule (user-defined or server-default).
func (s *Service) SetEnabled(ctx context.Context, userID string, kind Kind, ruleID string, enabled bool) error {
	return s.modify(ctx, userID, func(u *UserRules, cur *Ruleset) error {
		r := cur.Find(kind, ruleID)
		if r == nil {
			return ErrNotFound
		}
		if r.Default {
			if u.Defaults == nil {
				u.Defaults = map[string]*DefaultChange{}
			}
			ch := u.Defaults[ruleID]
			if ch == nil {
				ch = &DefaultChange{}
				u.Defaults[ruleID] = ch
			}
			ch.Enabled = &enabled
			return nil
		}
		for _, s := range u.Rules[kind] {
			if s.RuleID == ruleID {
				s.Enabled = enabled
			}
		}
		return nil
	})
}

// SetActions replaces the actions of a rule (user-defined or server-default).
func (s *Service) SetActions(ctx context.Context, userID string, kind Kind, ruleID string, actions []json.RawMessage) error {
	if actions == nil {
		return invalid("actions are required")
	}
	if _, err := ParseActions(actions); err != nil {
		return err
	}
	return s.modify(ctx, userID, func(u *UserRules, cur *Ruleset) error {
		r := cur.Find(kind, ruleID)
		if r == nil {
			return ErrNotFound
		}
		if r.Default {
			if u.Defaults == nil {
				u.Defaults = map[string]*DefaultChange{}
			}
			ch := u.Defaults[ruleID]
			if ch == nil {
				ch = &DefaultChange{}
				u.Defaults[ruleID] = ch
			}
			ch.Actions = actions
			return nil
		}
		for _, s := range u.Rules[kind] {
			if s.RuleID == ruleID {
				s.Actions = actions
			}
		}
		return nil
	})
}

// EnsureAccountData writes the user's m.push_rules account data when it does not exist
// yet (new accounts), so that an initial /sync shows the push rules.
func (s *Service) EnsureAccountData(ctx context.Context, userID string) error {
	if _, err := storage.GetAccountData(ctx, s.db, userID, "", "m.push_rules"); err == nil || !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	rs, err := s.Rules(ctx, userID)
	if err != nil {
		return err
	}
	ad, err := rs.AccountData()
	if err != nil {
		return err
	}
	_, err = storage.SetAccountData(ctx, s.db, userID, "", "m.push_rules", ad)
	return err
}
