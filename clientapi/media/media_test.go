package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
)

func testImage(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// BombPNG returns a tiny PNG whose header declares width x height pixels.
func bombPNG(width, height uint32) []byte {
	var buf bytes.Buffer
	buf.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], width)
	binary.BigEndian.PutUint32(ihdr[4:], height)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk := func(typ string, data []byte) {
		_ = binary.Write(&buf, binary.BigEndian, uint32(len(data)))
		buf.WriteString(typ)
		buf.Write(data)
		c := crc32.NewIEEE()
		c.Write([]byte(typ))
		c.Write(data)
		_ = binary.Write(&buf, binary.BigEndian, c.Sum32())
	}
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return buf.Bytes()
}

func TestThumbnailDimensions(t *testing.T) {
	src := encodePNG(t, testImage(1000, 500))
	cases := []struct {
		w, h         int
		method       string
		wantW, wantH int
	}{
		{320, 240, "scale", 320, 160}, // keeps aspect ratio
		{800, 600, "scale", 800, 400},
		{96, 96, "crop", 96, 96}, // exact size
		{32, 32, "crop", 32, 32},
	}
	for _, c := range cases {
		out, ct, err := MakeThumbnail(bytes.NewReader(src), c.w, c.h, c.method, 32_000_000)
		if err != nil {
			t.Fatal(err)
		}
		if ct != "image/png" {
			t.Fatalf("content type %s", ct)
		}
		cfg, err := png.DecodeConfig(bytes.NewReader(out))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Width != c.wantW || cfg.Height != c.wantH {
			t.Errorf("%dx%d %s: got %dx%d, want %dx%d", c.w, c.h, c.method, cfg.Width, cfg.Height, c.wantW, c.wantH)
		}
	}
	// Never upscale with scale.
	small := encodePNG(t, testImage(100, 50))
	out, _, err := MakeThumbnail(bytes.NewReader(small), 800, 600, "scale", 32_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, _ := png.DecodeConfig(bytes.NewReader(out)); cfg.Width != 100 || cfg.Height != 50 {
		t.Errorf("upscaled to %dx%d", cfg.Width, cfg.Height)
	}
}

func TestThumbnailRefusesDecompressionBomb(t *testing.T) {
	bomb := bombPNG(100000, 100000)
	start := time.Now()
	_, _, err := MakeThumbnail(bytes.NewReader(bomb), 320, 240, "scale", 32_000_000)
	if err == nil {
		t.Fatal("bomb decoded")
	}
	if e, ok := err.(interface{ Error() string }); !ok || !bytes.Contains([]byte(e.Error()), []byte("M_TOO_LARGE")) {
		t.Fatalf("error %v, want M_TOO_LARGE", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("took %v", d)
	}
}

func TestPickSize(t *testing.T) {
	sizes := config.Default().Media.ThumbnailSizes
	for _, c := range []struct {
		w, h   int
		method string
		want   config.ThumbnailSize
	}{
		{10, 10, "crop", config.ThumbnailSize{Width: 32, Height: 32, Method: "crop"}},
		{50, 50, "crop", config.ThumbnailSize{Width: 96, Height: 96, Method: "crop"}},
		{500, 500, "crop", config.ThumbnailSize{Width: 96, Height: 96, Method: "crop"}},
		{100, 100, "scale", config.ThumbnailSize{Width: 320, Height: 240, Method: "scale"}},
		{641, 100, "scale", config.ThumbnailSize{Width: 800, Height: 600, Method: "scale"}},
		{5000, 5000, "scale", config.ThumbnailSize{Width: 800, Height: 600, Method: "scale"}},
	} {
		got, ok := PickSize(sizes, c.w, c.h, c.method)
		if !ok || got != c.want {
			t.Errorf("%dx%d %s: got %+v", c.w, c.h, c.method, got)
		}
	}
}

func TestSafeContentTypeAndDisposition(t *testing.T) {
	for _, c := range []struct {
		ct, want string
		inline   bool
	}{
		{"image/png", "image/png", true},
		{"text/plain; charset=utf-8", "text/plain; charset=utf-8", true},
		// Harmless types come back as uploaded (Complement's TestContentCSAPIMediaV1
		// uploads "img/png"), but only as attachments.
		{"img/png", "img/png", false},
		{"application/zip", "application/zip", false},
		{"text/html", "application/octet-stream", false},
		{"image/svg+xml", "application/octet-stream", false},
		{"application/javascript", "application/octet-stream", false},
		{"application/atom+xml", "application/octet-stream", false},
		{"multipart/related; boundary=x", "application/octet-stream", false},
		{"", "application/octet-stream", false},
	} {
		if got, inline := SafeContentType(c.ct); got != c.want || inline != c.inline {
			t.Errorf("%q: got %q inline=%v, want %q inline=%v", c.ct, got, inline, c.want, c.inline)
		}
	}
	for _, c := range []struct {
		inline bool
		name   string
		want   string
	}{
		{true, "cat.png", `inline; filename=cat.png`},
		{false, `a "quoted" name.html`, `attachment; filename="a \"quoted\" name.html"`},
		{false, "résumé.pdf", `attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf`},
		{false, "evil\r\nX-Header: 1", `attachment; filename="evilX-Header: 1"`},
		{true, "", "inline"},
	} {
		if got := ContentDisposition(c.inline, c.name); got != c.want {
			t.Errorf("%q: got %q want %q", c.name, got, c.want)
		}
	}
}

func TestForbiddenAddresses(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
		"0.0.0.0", "::1", "::", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1"} {
		if !IsForbiddenAddress(netip.MustParseAddr(a)) {
			t.Errorf("%s allowed", a)
		}
	}
	for _, a := range []string{"8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"} {
		if IsForbiddenAddress(netip.MustParseAddr(a)) {
			t.Errorf("%s refused", a)
		}
	}
}

func TestParseOpenGraph(t *testing.T) {
	page := `<html><head><title>Fallback title</title>
<meta property="og:title" content="OG Title"><meta name="description" content="desc">
<meta property="og:image" content="/img.png"></head><body><title>not this</title></body></html>`
	og := ParseOpenGraph([]byte(page))
	if og["og:title"] != "OG Title" || og["og:description"] != "desc" || og["og:image"] != "/img.png" {
		t.Fatalf("%v", og)
	}
	og = ParseOpenGraph([]byte(`<title> Just a title </title>`))
	if og["og:title"] != "Just a title" {
		t.Fatalf("%v", og)
	}
}

// BenchmarkThumbnail4000x3000JPEG measures generating an 800x600 scaled thumbnail
// (decode + resize + encode) of a 12 Mpx JPEG.
func BenchmarkThumbnail4000x3000JPEG(b *testing.B) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, testImage(4000, 3000), &jpeg.Options{Quality: 85}); err != nil {
		b.Fatal(err)
	}
	src := buf.Bytes()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := MakeThumbnail(bytes.NewReader(src), 800, 600, "scale", 32_000_000); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPreviewRedirectCheckedAtConnect: a public page redirecting to a forbidden address
// is refused when the redirect is followed, because the check runs on each connection.
func TestPreviewRedirectCheckedAtConnect(t *testing.T) {
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "internal secret")
	}))
	defer secret.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, secret.URL+"/", http.StatusFound)
	}))
	defer redirector.Close()
	ru, _ := url.Parse(redirector.URL)
	cfg := config.Default()
	p := newPreviewer(&Service{cfg: cfg})
	// Pretend the redirector is a public host: only its port is allowed.
	p.deny = func(ap netip.AddrPort) bool { return strconv.Itoa(int(ap.Port())) != ru.Port() }
	_, body, _, err := p.get(context.Background(), ru, 1<<20)
	if !errors.Is(err, errForbiddenAddress) {
		t.Fatalf("redirect to a forbidden address: err %v, body %q", err, body)
	}
	// The default policy refuses loopback outright.
	p = newPreviewer(&Service{cfg: cfg})
	if _, _, _, err := p.get(context.Background(), ru, 1<<20); !errors.Is(err, errForbiddenAddress) {
		t.Fatalf("loopback: %v", err)
	}
	// allow_private_addresses lets it through.
	cfg.Media.URLPreview.AllowPrivateAddresses = true
	p = newPreviewer(&Service{cfg: cfg})
	if _, body, _, err := p.get(context.Background(), ru, 1<<20); err != nil || string(body) != "internal secret" {
		t.Fatalf("allowed: %v %q", err, body)
	}
}

func TestFederationMultipart(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "c")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("<b>hi</b>")
	_, _ = f.Seek(0, 0)
	rec := httptest.NewRecorder()
	writeMultipart(rec, "text/html", "x.html", f)
	mt, params, err := mime.ParseMediaType(rec.Header().Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("content type %q", rec.Header().Get("Content-Type"))
	}
	mr := multipart.NewReader(rec.Body, params["boundary"])
	p, err := mr.NextPart()
	if err != nil || p.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("first part: %v %v", err, p.Header)
	}
	if b, _ := io.ReadAll(p); string(b) != "{}" {
		t.Fatalf("metadata %q", b)
	}
	p, err = mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(p)
	if string(b) != "<b>hi</b>" || p.Header.Get("Content-Type") != "application/octet-stream" ||
		p.Header.Get("Content-Disposition") != "attachment; filename=x.html" {
		t.Fatalf("content part %v %q", p.Header, b)
	}
}
