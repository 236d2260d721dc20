package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/gif" // registers GIF decoding
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"os"

	xdraw "golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers WebP decoding

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// thumbnailable are the content types thumbnails are made from.
var thumbnailable = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// errCannotThumbnail is the spec's 400 for content the server cannot thumbnail.
var errCannotThumbnail = httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "Cannot generate a thumbnail for this content")

// PickSize rounds a request up to a configured size of the same method: the smallest
// at least as large as asked, else the largest. ok is false when none is configured.
func PickSize(sizes []config.ThumbnailSize, width, height int, method string) (config.ThumbnailSize, bool) {
	var best, largest config.ThumbnailSize
	found := false
	for _, sz := range sizes {
		if sz.Method != method {
			continue
		}
		if sz.Width*sz.Height > largest.Width*largest.Height {
			largest = sz
		}
		if sz.Width >= width && sz.Height >= height && (!found || sz.Width*sz.Height < best.Width*best.Height) {
			best, found = sz, true
		}
	}
	if found {
		return best, true
	}
	return largest, largest.Width > 0
}

// Thumbnail is a generated (or cached) thumbnail ready to serve.
type Thumbnail struct {
	ContentType string
	File        *os.File
	Meta        *storage.MediaThumbnail
}

// Thumbnail returns a thumbnail of uploaded media at the configured size nearest to the request.
func (s *Service) Thumbnail(ctx context.Context, m *storage.Media, width, height int, method string) (*Thumbnail, error) {
	if method != "crop" && method != "scale" {
		method = "scale"
	}
	if !thumbnailable[baseType(m.ContentType)] {
		return nil, errCannotThumbnail
	}
	sz, ok := PickSize(s.cfg.Media.ThumbnailSizes, width, height, method)
	if !ok {
		return nil, errCannotThumbnail
	}
	if t, err := s.cachedThumbnail(ctx, m, sz); t != nil || err != nil {
		return t, err
	}
	select {
	case s.thumbSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.thumbSem }()
	if t, err := s.cachedThumbnail(ctx, m, sz); t != nil || err != nil {
		return t, err
	}
	src, err := s.Open(m)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	data, ct, err := MakeThumbnail(src, sz.Width, sz.Height, sz.Method, s.cfg.Media.MaxImagePixels)
	if err != nil {
		return nil, err
	}
	sum, size, err := s.storeFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, err
	}
	meta := &storage.MediaThumbnail{ServerName: m.ServerName, MediaID: m.MediaID, Width: sz.Width, Height: sz.Height,
		Method: sz.Method, ContentType: ct, Size: size, SHA256: sum, CreatedTS: storage.NowMS()}
	if err := storage.PutMediaThumbnail(ctx, s.db, meta); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(sum))
	if err != nil {
		return nil, err
	}
	return &Thumbnail{ContentType: ct, File: f, Meta: meta}, nil
}

func (s *Service) cachedThumbnail(ctx context.Context, m *storage.Media, sz config.ThumbnailSize) (*Thumbnail, error) {
	meta, err := storage.GetMediaThumbnail(ctx, s.db, m.ServerName, m.MediaID, sz.Width, sz.Height, sz.Method)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(meta.SHA256))
	if err != nil {
		return nil, nil // regenerate
	}
	return &Thumbnail{ContentType: meta.ContentType, File: f, Meta: meta}, nil
}

// MakeThumbnail decodes an image and renders a thumbnail: "scale" fits within width x
// height keeping the aspect ratio and never upscales; "crop" fills exactly width x height,
// cropping the centre. The header's dimensions are checked against maxPixels before
// any pixel is decoded, so a decompression bomb costs only a header read.
// JPEG input gives a JPEG thumbnail; anything else a PNG.
func MakeThumbnail(r io.ReadSeeker, width, height int, method string, maxPixels int64) ([]byte, string, error) {
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return nil, "", errCannotThumbnail
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, "", httputil.TooLarge("Image is too large to thumbnail (%dx%d pixels)", cfg.Width, cfg.Height)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, "", err
	}
	img, _, err := image.Decode(r)
	if err != nil {
		return nil, "", errCannotThumbnail
	}
	out := Resize(img, width, height, method)
	var buf bytes.Buffer
	if format == "jpeg" {
		err = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 80})
		return buf.Bytes(), "image/jpeg", err
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(&buf, out); err != nil {
		return nil, "", fmt.Errorf("encode thumbnail: %w", err)
	}
	return buf.Bytes(), "image/png", nil
}

// Resize implements the scale and crop methods (see MakeThumbnail).
func Resize(img image.Image, width, height int, method string) image.Image {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	if method == "crop" {
		// The largest centred source rectangle with the target's aspect ratio.
		cw, ch := sw, sw*height/width
		if ch > sh {
			cw, ch = sh*width/height, sh
		}
		cw, ch = max(cw, 1), max(ch, 1)
		x0, y0 := b.Min.X+(sw-cw)/2, b.Min.Y+(sh-ch)/2
		dst := image.NewRGBA(image.Rect(0, 0, width, height))
		scale(dst, img, image.Rect(x0, y0, x0+cw, y0+ch))
		return dst
	}
	if sw <= width && sh <= height {
		return img // never upscale
	}
	w, h := width, sh*width/sw
	if h > height {
		w, h = sw*height/sh, height
	}
	w, h = max(w, 1), max(h, 1)
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	scale(dst, img, b)
	return dst
}

// scale resamples src's rectangle sr onto all of dst. Large reductions first go
// through a cheap approximate pass to twice the target size (the bilinear kernel's
// cost grows with the reduction ratio), then a bilinear pass for quality.
func scale(dst *image.RGBA, src image.Image, sr image.Rectangle) {
	dr := dst.Bounds()
	if sr.Dx() > 4*dr.Dx() && sr.Dy() > 4*dr.Dy() {
		mid := image.NewRGBA(image.Rect(0, 0, 2*dr.Dx(), 2*dr.Dy()))
		xdraw.ApproxBiLinear.Scale(mid, mid.Bounds(), src, sr, draw.Src, nil)
		src, sr = mid, mid.Bounds()
	}
	xdraw.BiLinear.Scale(dst, dr, src, sr, draw.Src, nil)
}

func baseType(ct string) string {
	for i := 0; i < len(ct); i++ {
		if ct[i] == ';' || ct[i] == ' ' {
			return ct[:i]
		}
	}
	return ct
}
