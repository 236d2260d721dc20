package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
)

// Client is Myelin's outgoing federation client: gomatrixserverlib's fclient over our
// Transport (server name resolution, TLS roots, private-address and allow/deny checks),
// signing every request as us.
type Client struct {
	fclient.FederationClient
	origin spec.ServerName
	key    config.SigningKey
	plain  *http.Client // requests fclient does not make, over the same transport
}

// ClientOptions adjust NewClient (tests use a fake resolver).
type ClientOptions struct {
	Resolver *Resolver
	Timeout  time.Duration
	Version  string
}

// NewClient builds the outgoing federation client for the server named origin.
func NewClient(fed config.Federation, origin spec.ServerName, key config.SigningKey, opts ClientOptions) (*Client, error) {
	tr, err := NewTransport(fed, opts.Resolver)
	if err != nil {
		return nil, err
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	ua := "Myelin"
	if opts.Version != "" {
		ua += "/" + opts.Version
	}
	fc := fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: origin, KeyID: key.ID, PrivateKey: key.Private}},
		fclient.WithTransport(tr), fclient.WithTimeout(opts.Timeout), fclient.WithUserAgent(ua),
	)
	return &Client{FederationClient: fc, origin: origin, key: key, plain: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}, nil
}

// DownloadMediaLegacy asks destination for one of its media with the unauthenticated
// GET /_matrix/media/v3/download/{serverName}/{mediaId} (allow_remote=false), the way
// servers fetched remote media before authenticated media: for servers that do not
// serve /_matrix/federation/v1/media/download (properly) yet.
func (c *Client) DownloadMediaLegacy(ctx context.Context, destination spec.ServerName, mediaID string) (*http.Response, error) {
	u := "matrix-federation://" + string(destination) + "/_matrix/media/v3/download/" +
		url.PathEscape(string(destination)) + "/" + url.PathEscape(mediaID) + "?allow_remote=false"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	return c.plain.Do(req)
}

// Origin is the server name the client signs as.
func (c *Client) Origin() spec.ServerName { return c.origin }

// DoSigned sends a signed request (content is marshalled as JSON when non-nil) to
// destination and decodes a JSON answer into out (when non-nil). Errors from the
// remote server are gomatrix.HTTPError values carrying the status.
func (c *Client) DoSigned(ctx context.Context, method string, destination spec.ServerName, requestURI string, content, out any) error {
	hreq, err := c.signedRequest(method, destination, requestURI, content)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if err := c.FederationClient.DoRequestAndParseResponse(ctx, hreq, &raw); err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("federation: decode answer of %s: %w", destination, err)
		}
	}
	return nil
}

// ErrAnswerTooLarge is returned by DoSignedLimit for an answer over its limit.
var ErrAnswerTooLarge = errors.New("federation: answer too large")

// DoSignedLimit is DoSigned reading at most limit bytes of the answer: more is
// ErrAnswerTooLarge (for answers whose size the remote server chooses, such as a whole
// auth chain).
func (c *Client) DoSignedLimit(ctx context.Context, method string, destination spec.ServerName, requestURI string, content, out any, limit int64) error {
	hreq, err := c.signedRequest(method, destination, requestURI, content)
	if err != nil {
		return err
	}
	resp, err := c.plain.Do(hreq.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close() // nolint: errcheck
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("federation: read answer of %s: %w", destination, err)
	}
	if int64(len(body)) > limit {
		return fmt.Errorf("%w: %s answered %s with more than %d bytes", ErrAnswerTooLarge, destination, hreq.URL.Path, limit)
	}
	if resp.StatusCode/100 != 2 {
		return gomatrix.HTTPError{Code: resp.StatusCode, Contents: body,
			Message: fmt.Sprintf("%s %s answered %d", method, hreq.URL.Path, resp.StatusCode)}
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("federation: decode answer of %s: %w", destination, err)
		}
	}
	return nil
}

// signedRequest builds a request signed as us (content marshalled as JSON when non-nil).
func (c *Client) signedRequest(method string, destination spec.ServerName, requestURI string, content any) (*http.Request, error) {
	req := fclient.NewFederationRequest(method, c.origin, destination, requestURI)
	if content != nil {
		if err := req.SetContent(content); err != nil {
			return nil, err
		}
	}
	if err := req.Sign(c.origin, c.key.ID, c.key.Private); err != nil {
		return nil, err
	}
	return req.HTTPRequest()
}

// keyClient is what the key ring needs of the client (both methods are unsigned).
var _ gomatrixserverlib.KeyClient = (*Client)(nil)

// ensure the transport satisfies http.RoundTripper.
var _ http.RoundTripper = (*Transport)(nil)
