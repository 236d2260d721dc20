package media

import (
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
)

// FuzzThumbnailParams parses arbitrary width/height/method query strings and picks a
// size among the default configured ones: parsing refuses with an *httputil.Error or
// gives positive dimensions and a known method; PickSize always returns a configured
// size of that method, never one larger than the largest configured, and the smallest
// that covers the request when one does.
func FuzzThumbnailParams(f *testing.F) {
	f.Add("width=32&height=32&method=crop")
	f.Add("width=100&height=100")
	f.Add("width=99999999999999999999&height=1&method=scale")
	f.Add("width=-1&height=0")
	f.Add("width=1&height=1&method=CROP")
	f.Add("width=800&height=601&method=scale")
	f.Add("width=%20&height=1e3")
	f.Add("width=1&width=2&height=3;method=crop")
	sizes := config.Default().Media.ThumbnailSizes
	f.Fuzz(func(t *testing.T, query string) {
		r := &http.Request{URL: &url.URL{RawQuery: query}}
		width, height, method, err := ThumbnailParams(r)
		if err != nil {
			var he *httputil.Error
			if !errors.As(err, &he) {
				t.Fatalf("%q: error %T %v is not an *httputil.Error", query, err, err)
			}
			return
		}
		if width <= 0 || height <= 0 || (method != "crop" && method != "scale") {
			t.Fatalf("%q accepted as %d x %d %q", query, width, height, method)
		}
		sz, ok := PickSize(sizes, width, height, method)
		if !ok {
			t.Fatalf("%q: no size picked", query)
		}
		var largest config.ThumbnailSize
		covering := false
		configured := false
		for _, c := range sizes {
			if c.Method != method {
				continue
			}
			if c == sz {
				configured = true
			}
			if c.Width*c.Height > largest.Width*largest.Height {
				largest = c
			}
			if c.Width >= width && c.Height >= height {
				covering = true
				if sz.Width < width || sz.Height < height || c.Width*c.Height < sz.Width*sz.Height {
					t.Fatalf("%q: picked %+v, %+v covers the request and is smaller", query, sz, c)
				}
			}
		}
		if !configured || sz.Method != method {
			t.Fatalf("%q: picked %+v, not a configured %s size", query, sz, method)
		}
		if sz.Width*sz.Height > largest.Width*largest.Height {
			t.Fatalf("%q: picked %+v, larger than the largest %+v", query, sz, largest)
		}
		if !covering && sz != largest {
			t.Fatalf("%q: nothing covers %dx%d, picked %+v not the largest %+v", query, width, height, sz, largest)
		}
	})
}

// FuzzPickSize drives PickSize with arbitrary configured sizes (as config.Verify allows
// them: 1..4096, crop or scale) and requests: never a panic, never a size that is not
// configured or larger than the largest configured.
func FuzzPickSize(f *testing.F) {
	f.Add(uint16(32), uint16(32), uint16(640), uint16(480), 100, 100, true)
	f.Add(uint16(4096), uint16(1), uint16(1), uint16(4096), 1<<62, -5, false)
	f.Add(uint16(0), uint16(5), uint16(5), uint16(0), 0, 0, true)
	f.Fuzz(func(t *testing.T, w1, h1, w2, h2 uint16, width, height int, crop bool) {
		clamp := func(v uint16) int { return int(v)%4096 + 1 }
		method := "scale"
		if crop {
			method = "crop"
		}
		sizes := []config.ThumbnailSize{
			{Width: clamp(w1), Height: clamp(h1), Method: method},
			{Width: clamp(w2), Height: clamp(h2), Method: method},
			{Width: 7, Height: 7, Method: "other"},
		}
		sz, ok := PickSize(sizes, width, height, method)
		if !ok {
			t.Fatalf("no size picked from %+v", sizes)
		}
		if sz != sizes[0] && sz != sizes[1] {
			t.Fatalf("picked %+v, not one of %+v", sz, sizes[:2])
		}
		maxArea := max(sizes[0].Width*sizes[0].Height, sizes[1].Width*sizes[1].Height)
		if sz.Width*sz.Height > maxArea || sz.Width > 4096 || sz.Height > 4096 {
			t.Fatalf("picked %+v larger than the configured maximum", sz)
		}
		if _, ok := PickSize(sizes, width, height, "none"); ok {
			t.Fatal("picked a size for an unconfigured method")
		}
	})
}
