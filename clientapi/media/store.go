// Package media is the media repository: content-addressed files under
// <data_dir>/media, their metadata in the database, thumbnails, URL previews and the
// HTTP serving rules (safe content types, Content-Disposition, CSP). The client API
// (clientapi/media.go) and the federation API call it.
package media

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// RemoteFetcher fetches media from another homeserver (over the federation media
// endpoints). The federation client implements it; without one, remote media is 404.
type RemoteFetcher interface {
	// FetchMedia returns the content of mxc://serverName/mediaID. The body is read up
	// to maxBytes; contentType and fileName may be empty.
	FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (contentType, fileName string, body io.ReadCloser, err error)
}

// UnusedIDLifetime is how long a media ID from POST /create may stay without content.
const UnusedIDLifetime = 24 * time.Hour

// maxPendingPerUser caps created-but-unused media IDs per user (spec: 429 beyond a limit).
const maxPendingPerUser = 100

// Service is the media repository.
type Service struct {
	cfg    *config.Config
	db     *storage.DB
	dir    string
	remote RemoteFetcher

	mu      sync.Mutex
	waiters map[string]chan struct{} // media ID → closed when its async upload completes

	thumbSem chan struct{} // bounds concurrent image decodes (memory)
	preview  *previewer
}

// NewService builds the media repository; remote may be nil (remote media is then 404).
func NewService(cfg *config.Config, db *storage.DB, remote RemoteFetcher) *Service {
	s := &Service{
		cfg:      cfg,
		db:       db,
		dir:      filepath.Join(cfg.DataDir, "media"),
		remote:   remote,
		waiters:  map[string]chan struct{}{},
		thumbSem: make(chan struct{}, 2),
	}
	s.preview = newPreviewer(s)
	go s.cleanTemp(time.Hour)
	return s
}

// cleanTemp removes temp files left by uploads interrupted by a crash (older than age;
// younger ones may belong to uploads in progress, here or in another process).
func (s *Service) cleanTemp(age time.Duration) {
	dir := filepath.Join(s.dir, "tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Config is the body of GET /media/config.
func (s *Service) Config() map[string]any {
	return map[string]any{"m.upload.size": s.cfg.Media.MaxUploadBytes}
}

// Errors with the spec's codes.
var (
	errNotFound       = httputil.NotFound("Media not found")
	errNotYetUploaded = httputil.NewError(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "Media has not been uploaded yet")
	errOverwrite      = httputil.NewError(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
)

func (s *Service) tooLarge() error {
	return httputil.TooLarge("Upload is larger than the maximum of %d bytes", s.cfg.Media.MaxUploadBytes)
}

// path is where content with this hex SHA-256 lives.
func (s *Service) path(sum string) string {
	return filepath.Join(s.dir, sum[0:2], sum[2:4], sum)
}

// storeFile writes r to the content store (temp file, fsync, rename: a crash never leaves
// a partial file under a content name). Identical content is stored once. It fails with
// errTooBig when r holds more than max bytes.
func (s *Service) storeFile(r io.Reader, max int64) (sum string, size int64, err error) {
	tmpDir := filepath.Join(s.dir, "tmp")
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return "", 0, err
	}
	f, err := os.CreateTemp(tmpDir, "upload-")
	if err != nil {
		return "", 0, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name()) // no-op once renamed
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), io.LimitReader(r, max+1))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return "", 0, errTooBig
	}
	if err != nil {
		return "", 0, fmt.Errorf("read upload: %w", err)
	}
	if size > max {
		return "", 0, errTooBig
	}
	if err := f.Sync(); err != nil {
		return "", 0, err
	}
	if err := f.Close(); err != nil {
		return "", 0, err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	final := s.path(sum)
	if _, err := os.Stat(final); err == nil {
		return sum, size, nil // deduplicated
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return "", 0, err
	}
	if err := os.Rename(f.Name(), final); err != nil {
		return "", 0, err
	}
	syncDir(filepath.Dir(final))
	return sum, size, nil
}

var errTooBig = errors.New("content too large")

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func newMediaID() string {
	b := make([]byte, 24)
	max := big.NewInt(int64(len(idAlphabet)))
	for i := range b {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err)
		}
		b[i] = idAlphabet[n.Int64()]
	}
	return string(b)
}

// Upload stores content uploaded by userID and returns its mxc:// URI.
// contentLength is the declared length (-1 when unknown).
func (s *Service) Upload(ctx context.Context, userID, contentType, fileName string, body io.Reader, contentLength int64) (string, error) {
	m, err := s.receive(ctx, userID, contentType, fileName, body, contentLength)
	if err != nil {
		return "", err
	}
	m.ServerName, m.MediaID = s.cfg.ServerName, newMediaID()
	m.CreatedTS = m.UploadedTS
	if err := storage.InsertMedia(ctx, s.db, m); err != nil {
		return "", err
	}
	return "mxc://" + m.ServerName + "/" + m.MediaID, nil
}

// receive checks limits and quota and writes the content to the store.
func (s *Service) receive(ctx context.Context, userID, contentType, fileName string, body io.Reader, contentLength int64) (*storage.Media, error) {
	limit := s.cfg.Media.MaxUploadBytes
	if contentLength > limit {
		return nil, s.tooLarge()
	}
	quota := s.cfg.Media.UserQuotaBytes
	var used int64
	if quota > 0 {
		var err error
		if used, err = storage.UserMediaBytes(ctx, s.db, userID); err != nil {
			return nil, err
		}
		if used+max(contentLength, 0) > quota {
			return nil, httputil.Forbidden("Media quota exceeded")
		}
	}
	sum, size, err := s.storeFile(body, limit)
	if errors.Is(err, errTooBig) {
		return nil, s.tooLarge()
	}
	if err != nil {
		return nil, err
	}
	if quota > 0 && used+size > quota {
		return nil, httputil.Forbidden("Media quota exceeded")
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	return &storage.Media{UserID: userID, ContentType: contentType, UploadName: fileName, Size: size, SHA256: sum, UploadedTS: storage.NowMS()}, nil
}

// Create reserves a media ID for asynchronous upload (POST /_matrix/media/v1/create).
func (s *Service) Create(ctx context.Context, userID string) (uri string, expiresAt int64, err error) {
	now := storage.NowMS()
	n, err := storage.CountPendingMedia(ctx, s.db, userID, now)
	if err != nil {
		return "", 0, err
	}
	if n >= maxPendingPerUser {
		return "", 0, httputil.LimitExceeded(60_000)
	}
	m := &storage.Media{ServerName: s.cfg.ServerName, MediaID: newMediaID(), UserID: userID,
		CreatedTS: now, ExpiresTS: now + UnusedIDLifetime.Milliseconds()}
	if err := storage.InsertMedia(ctx, s.db, m); err != nil {
		return "", 0, err
	}
	return "mxc://" + m.ServerName + "/" + m.MediaID, m.ExpiresTS, nil
}

// UploadTo fills in a media ID from Create (PUT /_matrix/media/v3/upload/{serverName}/{mediaId}).
func (s *Service) UploadTo(ctx context.Context, userID, serverName, mediaID, contentType, fileName string, body io.Reader, contentLength int64) error {
	if serverName != s.cfg.ServerName {
		return errNotFound
	}
	now := storage.NowMS()
	cur, err := storage.GetMedia(ctx, s.db, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return errNotFound
	}
	if err != nil {
		return err
	}
	switch {
	case cur.UserID != userID:
		return httputil.Forbidden("This media ID was created by another user")
	case cur.Uploaded():
		return errOverwrite
	case cur.ExpiresTS <= now:
		return errNotFound
	}
	m, err := s.receive(ctx, userID, contentType, fileName, body, contentLength)
	if err != nil {
		return err
	}
	m.ServerName, m.MediaID = serverName, mediaID
	ok, err := storage.CompleteMedia(ctx, s.db, m, now)
	if err != nil {
		return err
	}
	if !ok {
		return errOverwrite // a concurrent upload won
	}
	s.mu.Lock()
	if ch, ok := s.waiters[mediaID]; ok {
		close(ch)
		delete(s.waiters, mediaID)
	}
	s.mu.Unlock()
	return nil
}

func (s *Service) waiter(mediaID string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, ok := s.waiters[mediaID]
	if !ok {
		ch = make(chan struct{})
		s.waiters[mediaID] = ch
	}
	return ch
}

// Lookup returns the metadata of uploaded media, waiting up to wait for a pending
// asynchronous upload. Remote media is fetched through the RemoteFetcher.
func (s *Service) Lookup(ctx context.Context, serverName, mediaID string, wait time.Duration) (*storage.Media, error) {
	if mediaID == "" || len(mediaID) > 255 || serverName == "" {
		return nil, errNotFound
	}
	deadline := time.Now().Add(wait)
	for {
		m, err := storage.GetMedia(ctx, s.db, serverName, mediaID)
		if errors.Is(err, storage.ErrNotFound) {
			if serverName != s.cfg.ServerName {
				return s.fetchRemote(ctx, serverName, mediaID)
			}
			return nil, errNotFound
		}
		if err != nil {
			return nil, err
		}
		if m.Uploaded() {
			return m, nil
		}
		if m.ExpiresTS <= storage.NowMS() {
			return nil, errNotFound
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errNotYetUploaded
		}
		// Woken by an upload in this process; polled for uploads through other processes.
		t := time.NewTimer(min(left, time.Second))
		select {
		case <-s.waiter(mediaID):
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

func (s *Service) fetchRemote(ctx context.Context, serverName, mediaID string) (*storage.Media, error) {
	if s.remote == nil || !s.cfg.Federation.Enabled {
		return nil, errNotFound
	}
	ct, name, body, err := s.remote.FetchMedia(ctx, serverName, mediaID, s.cfg.Media.RemoteMaxBytes)
	if err != nil {
		logrus.WithError(err).WithField("origin", serverName).Info("remote media fetch failed")
		return nil, errNotFound
	}
	defer body.Close()
	sum, size, err := s.storeFile(body, s.cfg.Media.RemoteMaxBytes)
	if errors.Is(err, errTooBig) {
		return nil, httputil.NewError(http.StatusBadGateway, "M_TOO_LARGE", "Remote media is too large")
	}
	if err != nil {
		return nil, err
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	now := storage.NowMS()
	m := &storage.Media{ServerName: serverName, MediaID: mediaID, ContentType: ct, UploadName: name, Size: size, SHA256: sum, CreatedTS: now, UploadedTS: now}
	if err := storage.InsertMedia(ctx, s.db, m); err != nil && !storage.IsUniqueViolation(err) {
		return nil, err
	}
	return m, nil
}

// Open opens the content of uploaded media.
func (s *Service) Open(m *storage.Media) (*os.File, error) {
	f, err := os.Open(s.path(m.SHA256))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errNotFound
	}
	return f, err
}

// FilePath returns where the content of a hash is stored (for tests and tools).
func (s *Service) FilePath(sum string) string { return s.path(sum) }
