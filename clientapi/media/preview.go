package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/html"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// URL preview limits.
const (
	previewTimeout    = 10 * time.Second
	previewMaxBody    = 2 << 20
	previewMaxImage   = 10 << 20
	previewCacheTTL   = time.Hour
	previewMaxRedirs  = 5
	previewUserAgent  = "Myelin URL preview (+https://github.com/myelin-chat/myelin)"
	previewPreviewSrv = "@url_preview"
)

// errForbiddenAddress is returned by the dialer for addresses previews may not reach.
var errForbiddenAddress = errors.New("destination address is not allowed")

// blockedPrefixes are never reached by URL previews unless allow_private_addresses is on.
var blockedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this" network, unspecified
		"10.0.0.0/8",      // RFC 1918
		"100.64.0.0/10",   // CGNAT
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local, cloud metadata
		"172.16.0.0/12",   // RFC 1918
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // TEST-NET-1
		"192.168.0.0/16",  // RFC 1918
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // TEST-NET-2
		"203.0.113.0/24",  // TEST-NET-3
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, broadcast
		"::/128",          // unspecified
		"::1/128",         // loopback
		"64:ff9b::/96",    // NAT64 (embeds IPv4)
		"64:ff9b:1::/48",  // local NAT64
		"100::/64",        // discard
		"2001:db8::/32",   // documentation
		"fc00::/7",        // ULA
		"fe80::/10",       // link-local
		"fec0::/10",       // site-local (deprecated)
		"ff00::/8",        // multicast
		"2002::/16",       // 6to4 (embeds IPv4)
		"2001::/32",       // Teredo (embeds IPv4)
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// IsForbiddenAddress reports whether ip is loopback, private, link-local, CGNAT,
// unspecified, multicast or otherwise not a public unicast address.
func IsForbiddenAddress(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return true
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

type previewer struct {
	s      *Service
	client *http.Client
	// deny decides, per connection, whether a resolved address may be reached.
	deny func(netip.AddrPort) bool
}

func newPreviewer(s *Service) *previewer {
	p := &previewer{s: s, deny: func(ap netip.AddrPort) bool { return IsForbiddenAddress(ap.Addr()) }}
	if s.cfg.Media.URLPreview.AllowPrivateAddresses {
		p.deny = func(netip.AddrPort) bool { return false }
	}
	dialer := &net.Dialer{
		Timeout: previewTimeout,
		// Control runs on the resolved address of every connection attempt, so a DNS
		// answer changing between checks (rebinding) or a redirect cannot slip through.
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || p.deny(ap) {
				return errForbiddenAddress
			}
			return nil
		},
	}
	tr := &http.Transport{
		Proxy:                 nil, // never through a proxy: the check must see the real destination
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   previewTimeout,
		ResponseHeaderTimeout: previewTimeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
	}
	p.client = &http.Client{
		Transport: tr,
		Timeout:   previewTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= previewMaxRedirs {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return errors.New("redirect to a non-HTTP URL")
			}
			return nil
		},
	}
	return p
}

// Preview returns the Open Graph data of a URL (GET /preview_url), cached for an hour.
func (s *Service) Preview(ctx context.Context, userID, rawURL string) (json.RawMessage, error) {
	if !s.cfg.Media.URLPreview.Enabled {
		return nil, httputil.NewError(http.StatusForbidden, "M_FORBIDDEN", "URL previews are disabled")
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, httputil.InvalidParam("url must be an absolute http or https URL")
	}
	u.Fragment = ""
	key := u.String()
	now := time.Now()
	if og, err := storage.GetURLPreview(ctx, s.db, key, now.Add(-previewCacheTTL).UnixMilli()); err == nil {
		return json.RawMessage(og), nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	og, err := s.preview.fetch(ctx, userID, u)
	if err != nil {
		if errors.Is(err, errForbiddenAddress) {
			return nil, httputil.Forbidden("URL previews of this address are not allowed")
		}
		if e, ok := httputil.AsError(err); ok {
			return nil, e
		}
		return nil, httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "Could not fetch the URL")
	}
	data, err := json.Marshal(og)
	if err != nil {
		return nil, err
	}
	if err := storage.PutURLPreview(ctx, s.db, key, string(data), now.UnixMilli()); err != nil {
		return nil, err
	}
	return data, nil
}

// get fetches a URL with the safe client, reading at most limit bytes of the body.
func (p *previewer) get(ctx context.Context, u *url.URL, limit int64) (ct string, body []byte, final *url.URL, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", nil, nil, err
	}
	req.Header.Set("User-Agent", previewUserAgent)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", nil, nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return "", nil, nil, err
	}
	return resp.Header.Get("Content-Type"), body, resp.Request.URL, nil
}

func (p *previewer) fetch(ctx context.Context, userID string, u *url.URL) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*previewTimeout)
	defer cancel()
	ct, body, final, err := p.get(ctx, u, previewMaxBody)
	if err != nil {
		return nil, err
	}
	og := map[string]any{}
	mt, _, _ := mime.ParseMediaType(ct)
	if strings.HasPrefix(mt, "image/") {
		p.addImage(ctx, userID, og, mt, body)
		return og, nil
	}
	if mt != "text/html" && mt != "application/xhtml+xml" {
		return og, nil
	}
	tags := ParseOpenGraph(body)
	for k, v := range tags {
		if k != "og:image" && k != "og:image:width" && k != "og:image:height" {
			og[k] = v
		}
	}
	if img := tags["og:image"]; img != "" {
		if iu, err := final.Parse(img); err == nil && (iu.Scheme == "http" || iu.Scheme == "https") {
			if ict, data, _, err := p.get(ctx, iu, previewMaxImage); err == nil {
				p.addImage(ctx, userID, og, ict, data)
			}
		}
	}
	return og, nil
}

// addImage stores a preview image as media and adds og:image (an mxc:// URI) with its size.
// Preview images are owned by a pseudo-user so they never count against the user's quota.
func (p *previewer) addImage(ctx context.Context, _ string, og map[string]any, ct string, data []byte) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return
	}
	mt, _, _ := mime.ParseMediaType(ct)
	if !strings.HasPrefix(mt, "image/") {
		mt = "application/octet-stream"
	}
	uri, err := p.s.Upload(ctx, previewPreviewSrv, mt, "", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return
	}
	og["og:image"] = uri
	og["og:image:width"] = cfg.Width
	og["og:image:height"] = cfg.Height
	og["matrix:image:size"] = len(data)
	if mt != "application/octet-stream" {
		og["og:image:type"] = mt
	}
}

// ParseOpenGraph extracts og:* meta properties from an HTML page, falling back to
// <title> and <meta name="description"> for og:title and og:description.
func ParseOpenGraph(page []byte) map[string]string {
	out := map[string]string{}
	var title, desc string
	z := html.NewTokenizer(bytes.NewReader(page))
	inTitle := false
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if out["og:title"] == "" && title != "" {
				out["og:title"] = title
			}
			if out["og:description"] == "" && desc != "" {
				out["og:description"] = desc
			}
			return out
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = tt == html.StartTagToken && title == ""
			case "meta":
				var prop, nm, content string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					switch string(k) {
					case "property":
						prop = string(v)
					case "name":
						nm = strings.ToLower(string(v))
					case "content":
						content = string(v)
					}
				}
				if prop == "" && strings.HasPrefix(nm, "og:") {
					prop = nm
				}
				content = strings.TrimSpace(content)
				if strings.HasPrefix(prop, "og:") && len(out) < 64 && len(content) <= 4096 {
					if _, seen := out[prop]; !seen {
						out[prop] = content
					}
				}
				if nm == "description" && desc == "" {
					desc = truncate(content, 1000)
				}
			}
		case html.TextToken:
			if inTitle {
				title = truncate(strings.TrimSpace(string(z.Text())), 500)
				inTitle = false
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = false
			}
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8Start(s[n]) {
		n--
	}
	return s[:n]
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
