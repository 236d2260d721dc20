package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

const (
	mediaMaxUpload = 2 << 20
	mediaQuota     = 3 << 20
)

func mediaServer(t *testing.T, engine string, allowPrivate bool) *harness.Server {
	return harness.Start(t, harness.Options{Engine: engine, Configure: func(cfg *config.Config) {
		cfg.Media.MaxUploadBytes = mediaMaxUpload
		cfg.Media.URLPreview.AllowPrivateAddresses = allowPrivate
		cfg.Media.UserQuotaBytes = mediaQuota
	}})
}

type mediaResp struct {
	status int
	header http.Header
	body   []byte
}

func (r mediaResp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d, body not JSON: %q", r.status, r.body)
	}
	return m
}

func mediaDo(t *testing.T, method, u, token string, body []byte, hdr map[string]string) mediaResp {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return mediaResp{resp.StatusCode, resp.Header, data}
}

func mediaPNG(t *testing.T, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mediaBombPNG is a valid-looking PNG of a few bytes whose header declares w x h pixels.
func mediaBombPNG(w, h uint32) []byte {
	var buf bytes.Buffer
	buf.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6
	for _, c := range []struct {
		typ  string
		data []byte
	}{{"IHDR", ihdr}, {"IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01}}, {"IEND", nil}} {
		_ = binary.Write(&buf, binary.BigEndian, uint32(len(c.data)))
		buf.WriteString(c.typ)
		buf.Write(c.data)
		crc := crc32.NewIEEE()
		crc.Write([]byte(c.typ))
		crc.Write(c.data)
		_ = binary.Write(&buf, binary.BigEndian, crc.Sum32())
	}
	return buf.Bytes()
}

// mediaFiles counts content files under <data_dir>/media (temp files excluded).
func mediaFiles(t *testing.T, s *harness.Server) int {
	n := 0
	root := filepath.Join(s.DataDir, "media")
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if rel, _ := filepath.Rel(root, p); err == nil && !d.IsDir() && !strings.HasPrefix(rel, "tmp"+string(filepath.Separator)) {
			n++
		}
		return nil
	})
	return n
}

func mediaURI(t *testing.T, s string) id.ContentURI {
	t.Helper()
	u, err := id.ParseContentURI(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestMediaRoundTrip(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := mediaServer(t, engine, false)
		ctx := context.Background()
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		tok := alice.AccessToken

		// Config.
		if r := mediaDo(t, "GET", s.URL+"/_matrix/client/v1/media/config", tok, nil, nil); r.status != 200 || r.json(t)["m.upload.size"] != float64(mediaMaxUpload) {
			t.Fatalf("config: %d %s", r.status, r.body)
		}

		// An image and an "encrypted attachment" round-trip byte for byte through mautrix.
		pic := mediaPNG(t, 1000, 500)
		up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: pic, ContentType: "image/png", FileName: "cat.png"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := bob.DownloadBytes(ctx, up.ContentURI)
		if err != nil || !bytes.Equal(got, pic) {
			t.Fatalf("download: %v (equal=%v)", err, bytes.Equal(got, pic))
		}
		blob := make([]byte, 300_000)
		_, _ = rand.Read(blob)
		encUp, err := alice.UploadBytes(ctx, blob, "application/octet-stream")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := bob.DownloadBytes(ctx, encUp.ContentURI); err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("encrypted blob download: %v", err)
		}

		// Authenticated endpoints need a token; the legacy one stays open.
		path := "/download/" + up.ContentURI.Homeserver + "/" + up.ContentURI.FileID
		if r := mediaDo(t, "GET", s.URL+"/_matrix/client/v1/media"+path, "", nil, nil); r.status != 401 {
			t.Fatalf("v1 download without token: %d", r.status)
		}
		r := mediaDo(t, "GET", s.URL+"/_matrix/media/v3"+path, "", nil, nil)
		if r.status != 200 || !bytes.Equal(r.body, pic) {
			t.Fatalf("legacy download: %d", r.status)
		}
		if r.header.Get("Content-Type") != "image/png" || r.header.Get("Content-Disposition") != "inline; filename=cat.png" ||
			r.header.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(r.header.Get("Content-Security-Policy"), "sandbox;") ||
			r.header.Get("Cross-Origin-Resource-Policy") != "cross-origin" {
			t.Fatalf("headers: %v", r.header)
		}
		// The file name in the path wins, escaped per RFC 5987 when not ASCII.
		r = mediaDo(t, "GET", s.URL+"/_matrix/client/v1/media"+path+"/"+url.PathEscape("chat noir é.png"), tok, nil, nil)
		if r.status != 200 || r.header.Get("Content-Disposition") != `inline; filename*=utf-8''chat%20noir%20%C3%A9.png` {
			t.Fatalf("file name: %d %q", r.status, r.header.Get("Content-Disposition"))
		}

		// Range request.
		r = mediaDo(t, "GET", s.URL+"/_matrix/client/v1/media/download/"+encUp.ContentURI.Homeserver+"/"+encUp.ContentURI.FileID, tok, nil,
			map[string]string{"Range": "bytes=1000-1999"})
		if r.status != http.StatusPartialContent || !bytes.Equal(r.body, blob[1000:2000]) ||
			r.header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(blob)) {
			t.Fatalf("range: %d %v", r.status, r.header)
		}

		// Deduplication: the same bytes uploaded again get a new mxc:// URI but no new file.
		before := mediaFiles(t, s)
		again, err := bob.UploadBytes(ctx, pic, "image/png")
		if err != nil {
			t.Fatal(err)
		}
		if again.ContentURI == up.ContentURI {
			t.Fatal("same mxc URI for two uploads")
		}
		if after := mediaFiles(t, s); after != before || before != 2 {
			t.Fatalf("files on disk: %d before, %d after the duplicate upload (want 2, 2)", before, after)
		}

		// Thumbnails: scale keeps the aspect ratio, crop is exact; cached on the second call.
		for _, c := range []struct {
			q            string
			wantW, wantH int
		}{
			{"width=320&height=240&method=scale", 320, 160},
			{"width=640&height=480&method=scale", 640, 320},
			{"width=96&height=96&method=crop", 96, 96},
			{"width=30&height=30&method=crop", 32, 32},
			{"width=320&height=240&method=scale", 320, 160},
		} {
			r := mediaDo(t, "GET", s.URL+"/_matrix/client/v1/media/thumbnail/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID+"?"+c.q, tok, nil, nil)
			if r.status != 200 {
				t.Fatalf("thumbnail %s: %d %s", c.q, r.status, r.body)
			}
			cfg, format, err := image.DecodeConfig(bytes.NewReader(r.body))
			if err != nil || cfg.Width != c.wantW || cfg.Height != c.wantH || format != "png" {
				t.Fatalf("thumbnail %s: %dx%d %s %v, want %dx%d", c.q, cfg.Width, cfg.Height, format, err, c.wantW, c.wantH)
			}
		}
		// mautrix's thumbnail call uses the same endpoint.
		if resp, err := bob.DownloadThumbnail(ctx, up.ContentURI, 96, 96, mautrix.DownloadThumbnailExtra{Method: "crop"}); err != nil || resp.StatusCode != 200 {
			t.Fatalf("mautrix thumbnail: %v", err)
		} else {
			resp.Body.Close()
		}
		// Not an image: 400.
		thumb := "/_matrix/client/v1/media/thumbnail/" + encUp.ContentURI.Homeserver + "/" + encUp.ContentURI.FileID + "?width=32&height=32"
		if r := mediaDo(t, "GET", s.URL+thumb, tok, nil, nil); r.status != 400 {
			t.Fatalf("thumbnail of a blob: %d %s", r.status, r.body)
		}

		// Unknown media.
		if _, err := bob.DownloadBytes(ctx, id.ContentURI{Homeserver: s.ServerName, FileID: "nope"}); err == nil {
			t.Fatal("unknown media downloaded")
		} else if st, code := udErr(t, err); st != 404 || code != "M_NOT_FOUND" {
			t.Fatalf("unknown media: %d %s", st, code)
		}
		// Remote media without a federation fetcher: 404.
		if r := mediaDo(t, "GET", s.URL+"/_matrix/client/v1/media/download/other.test/abc", tok, nil, nil); r.status != 404 {
			t.Fatalf("remote media: %d", r.status)
		}

		// Asynchronous upload.
		created, err := alice.CreateMXC(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !created.UnusedExpiresAt.After(time.Now()) {
			t.Fatalf("unused_expires_at %v", created.UnusedExpiresAt)
		}
		dl := s.URL + "/_matrix/client/v1/media/download/" + created.ContentURI.Homeserver + "/" + created.ContentURI.FileID
		start := time.Now()
		if r := mediaDo(t, "GET", dl+"?timeout_ms=300", tok, nil, nil); r.status != 504 || r.json(t)["errcode"] != "M_NOT_YET_UPLOADED" {
			t.Fatalf("not yet uploaded: %d %s", r.status, r.body)
		} else if time.Since(start) < 250*time.Millisecond {
			t.Fatal("did not wait for timeout_ms")
		}
		_, err = bob.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("bob"), ContentType: "text/plain", MXC: created.ContentURI})
		if st, code := udErr(t, err); st != 403 || code != "M_FORBIDDEN" {
			t.Fatalf("upload by another user: %d %s", st, code)
		}
		// A download waiting for the upload is woken by it.
		waited := make(chan mediaResp, 1)
		go func() { waited <- mediaDo(t, "GET", dl+"?timeout_ms=20000", tok, nil, nil) }()
		time.Sleep(200 * time.Millisecond)
		if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("hello async"), ContentType: "text/plain", MXC: created.ContentURI}); err != nil {
			t.Fatal(err)
		}
		if r := <-waited; r.status != 200 || string(r.body) != "hello async" {
			t.Fatalf("waiting download: %d %q", r.status, r.body)
		}
		_, err = alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("again"), ContentType: "text/plain", MXC: created.ContentURI})
		if st, code := udErr(t, err); st != 409 || code != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Fatalf("second upload: %d %s", st, code)
		}

		// Media survives a restart.
		s.Restart()
		if got, err := bob.DownloadBytes(ctx, up.ContentURI); err != nil || !bytes.Equal(got, pic) {
			t.Fatalf("download after restart: %v", err)
		}
	})
}

func TestMediaBadInput(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := mediaServer(t, engine, false)
		ctx := context.Background()
		alice := udRegister(t, s, "alice")
		tok := alice.AccessToken
		upload := func(ct string, body []byte) mediaResp {
			return mediaDo(t, "POST", s.URL+"/_matrix/media/v3/upload?filename=x", tok, body, map[string]string{"Content-Type": ct})
		}

		// Over the upload limit: 413 M_TOO_LARGE, nothing stored.
		if r := upload("application/octet-stream", make([]byte, mediaMaxUpload+1)); r.status != 413 || r.json(t)["errcode"] != "M_TOO_LARGE" {
			t.Fatalf("too large: %d %s", r.status, r.body)
		}
		if n := mediaFiles(t, s); n != 0 {
			t.Fatalf("%d files stored after a refused upload", n)
		}
		// Unknown length (chunked) over the limit is refused too.
		_, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{Content: bytes.NewReader(make([]byte, mediaMaxUpload+100)), ContentLength: -1, ContentType: "application/octet-stream"})
		if st, code := udErr(t, err); st != 413 || code != "M_TOO_LARGE" {
			t.Fatalf("chunked too large: %d %s", st, code)
		}

		// A PNG declaring 100000x100000 pixels: refused quickly without decoding.
		r := upload("image/png", mediaBombPNG(100000, 100000))
		if r.status != 200 {
			t.Fatalf("bomb upload: %d %s", r.status, r.body)
		}
		bomb := mediaURI(t, r.json(t)["content_uri"].(string))
		start := time.Now()
		r = mediaDo(t, "GET", s.URL+"/_matrix/client/v1/media/thumbnail/"+bomb.Homeserver+"/"+bomb.FileID+"?width=320&height=240", tok, nil, nil)
		if r.status != 413 || r.json(t)["errcode"] != "M_TOO_LARGE" {
			t.Fatalf("bomb thumbnail: %d %s", r.status, r.body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("bomb took %v", d)
		}

		// HTML is never served inline or as text/html.
		page := []byte("<html><script>alert(document.cookie)</script></html>")
		r = upload("text/html", page)
		html := mediaURI(t, r.json(t)["content_uri"].(string))
		for _, u := range []string{
			s.URL + "/_matrix/client/v1/media/download/" + html.Homeserver + "/" + html.FileID + "/page.html",
			s.URL + "/_matrix/media/v3/download/" + html.Homeserver + "/" + html.FileID,
		} {
			r := mediaDo(t, "GET", u, tok, nil, nil)
			if r.status != 200 || !bytes.Equal(r.body, page) {
				t.Fatalf("html download: %d", r.status)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
				t.Fatalf("html served as %q", ct)
			}
			if cd := r.header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") {
				t.Fatalf("html disposition %q", cd)
			}
			if csp := r.header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox;") || !strings.Contains(csp, "script-src 'none'") {
				t.Fatalf("CSP %q", csp)
			}
		}

		// The per-user quota: 403 M_FORBIDDEN (as the spec lists for quotas) once exceeded.
		if r := upload("application/octet-stream", make([]byte, mediaMaxUpload)); r.status != 200 {
			t.Fatalf("upload within quota: %d %s", r.status, r.body)
		}
		if r := upload("application/octet-stream", make([]byte, 1<<20)); r.status != 403 || r.json(t)["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("upload over quota: %d %s", r.status, r.body)
		}

		// Bad thumbnail parameters.
		if r := mediaDo(t, "GET", s.URL+"/_matrix/client/v1/media/thumbnail/"+bomb.Homeserver+"/"+bomb.FileID+"?width=-1&height=x", tok, nil, nil); r.status != 400 {
			t.Fatalf("bad thumbnail params: %d", r.status)
		}

		// URL previews of internal addresses are refused, including after a redirect.
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/secret", http.StatusFound)
		}))
		defer redirector.Close()
		for _, target := range []string{
			"http://127.0.0.1:8008/_matrix/client/versions",
			"http://169.254.169.254/latest/meta-data/",
			"http://[::1]/",
			redirector.URL + "/go",
		} {
			_, err := alice.GetURLPreview(ctx, target)
			if st, code := udErr(t, err); st != 403 || code != "M_FORBIDDEN" {
				t.Fatalf("preview of %s: %d %s", target, st, code)
			}
		}
		for _, target := range []string{"file:///etc/passwd", "gopher://x", "not a url"} {
			_, err := alice.GetURLPreview(ctx, target)
			if st, _ := udErr(t, err); st != 400 {
				t.Fatalf("preview of %s: %d", target, st)
			}
		}
	})
}

func TestMediaURLPreview(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := mediaServer(t, engine, true)
		ctx := context.Background()
		alice := udRegister(t, s, "alice")
		logo := mediaPNG(t, 64, 48)
		hits := 0
		site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/logo.png":
				w.Header().Set("Content-Type", "image/png")
				_, _ = w.Write(logo)
			case "/plain":
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				_, _ = io.WriteString(w, `<html><head><title>Plain page</title><meta name="description" content="About it"></head></html>`)
			default:
				hits++
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				_, _ = io.WriteString(w, `<html><head><meta property="og:title" content="Myelin &amp; friends">
<meta property="og:description" content="A homeserver"><meta property="og:image" content="/logo.png"></head><body>hi</body></html>`)
			}
		}))
		defer site.Close()
		res, err := alice.GetURLPreview(ctx, site.URL+"/page")
		if err != nil {
			t.Fatal(err)
		}
		if res.Title != "Myelin & friends" || res.Description != "A homeserver" {
			t.Fatalf("preview: %+v", res)
		}
		if res.ImageURL == "" || res.ImageWidth != 64 || res.ImageHeight != 48 {
			t.Fatalf("preview image: %+v", res)
		}
		if got, err := alice.DownloadBytes(ctx, mediaURI(t, string(res.ImageURL))); err != nil || !bytes.Equal(got, logo) {
			t.Fatalf("preview image download: %v", err)
		}
		// Cached: a second preview does not fetch again.
		if _, err := alice.GetURLPreview(ctx, site.URL+"/page"); err != nil || hits != 1 {
			t.Fatalf("second preview: %v, %d fetches", err, hits)
		}
		res, err = alice.GetURLPreview(ctx, site.URL+"/plain")
		if err != nil || res.Title != "Plain page" || res.Description != "About it" {
			t.Fatalf("fallback preview: %+v %v", res, err)
		}
	})
}

func TestJSClientMedia(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := mediaServer(t, engine, false)
		runJS(t, "media.mjs", s.URL)
	})
}

// BenchmarkMediaDownload1MiB downloads a 1 MiB file through the authenticated endpoint
// (in-process server, SQLite); b.N downloads, reported as downloads/s and MB/s.
func BenchmarkMediaDownload1MiB(b *testing.B) {
	hs := benchServer(b)
	c := hs.Client()
	reg := benchDo(b, c, "POST", hs.URL+"/_matrix/client/v3/register", "", map[string]any{
		"username": "media", "password": "bench-password", "auth": map[string]any{"type": "m.login.dummy"},
	})
	token := reg["access_token"].(string)
	blob := make([]byte, 1<<20)
	_, _ = rand.Read(blob)
	req, _ := http.NewRequest("POST", hs.URL+"/_matrix/media/v3/upload", bytes.NewReader(blob))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	var up struct {
		ContentURI string `json:"content_uri"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	mxc, err := id.ParseContentURI(up.ContentURI)
	if err != nil {
		b.Fatalf("upload: %d %v", resp.StatusCode, err)
	}
	u := hs.URL + "/_matrix/client/v1/media/download/" + mxc.Homeserver + "/" + mxc.FileID
	b.SetBytes(int64(len(blob)))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(blob)) {
			b.Fatalf("download: %d, %d bytes", resp.StatusCode, n)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "downloads/s")
}

// TestMediaOverFederation: a user on B downloads (and thumbnails) media uploaded on A;
// B fetches it over A's X-Matrix authenticated federation media endpoint.
func TestMediaOverFederation(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		a := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true})
		b := harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true, ServerName: "hs2.test"})
		ctx := context.Background()
		alice := udRegister(t, a, "alice")
		bob := udRegister(t, b, "bob")
		pic := mediaPNG(t, 400, 300)
		up, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: pic, ContentType: "image/png", FileName: "remote.png"})
		if err != nil {
			t.Fatal(err)
		}
		if up.ContentURI.Homeserver != a.ServerName {
			t.Fatalf("mxc %s not on %s", up.ContentURI, a.ServerName)
		}
		// Unsigned federation requests are refused.
		fc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: harness.TestCA(t).Pool()}}}
		resp, err := fc.Get(a.FederationURL + "/_matrix/federation/v1/media/download/" + up.ContentURI.FileID)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("unsigned federation media download: %d", resp.StatusCode)
		}
		got, err := bob.DownloadBytes(ctx, up.ContentURI)
		if err != nil || !bytes.Equal(got, pic) {
			t.Fatalf("remote download: %v", err)
		}
		r := mediaDo(t, "GET", b.URL+"/_matrix/client/v1/media/download/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID, bob.AccessToken, nil, nil)
		if r.header.Get("Content-Disposition") != "inline; filename=remote.png" || r.header.Get("Content-Type") != "image/png" {
			t.Fatalf("remote headers: %v", r.header)
		}
		r = mediaDo(t, "GET", b.URL+"/_matrix/client/v1/media/thumbnail/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID+"?width=96&height=96&method=crop", bob.AccessToken, nil, nil)
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(r.body)); r.status != 200 || err != nil || cfg.Width != 96 || cfg.Height != 96 {
			t.Fatalf("remote thumbnail: %d %v %+v", r.status, err, cfg)
		}
		// Unknown remote media: 404.
		if _, err := bob.DownloadBytes(ctx, id.ContentURI{Homeserver: a.ServerName, FileID: "missing"}); err == nil {
			t.Fatal("unknown remote media downloaded")
		} else if st, _ := udErr(t, err); st != 404 {
			t.Fatalf("unknown remote media: %d", st)
		}
	})
}
