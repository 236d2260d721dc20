package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Media is the metadata of one mxc:// URI. SHA256 is empty while a media ID created
// for asynchronous upload has no content yet.
type Media struct {
	ServerName  string
	MediaID     string
	UserID      string
	ContentType string
	UploadName  string
	Size        int64
	SHA256      string
	CreatedTS   int64
	UploadedTS  int64
	ExpiresTS   int64
}

// Uploaded reports whether the media has content.
func (m *Media) Uploaded() bool { return m.SHA256 != "" }

// MediaThumbnail is the metadata of a generated thumbnail.
type MediaThumbnail struct {
	ServerName  string
	MediaID     string
	Width       int
	Height      int
	Method      string
	ContentType string
	Size        int64
	SHA256      string
	CreatedTS   int64
}

const mediaColumns = `server_name, media_id, user_id, content_type, upload_name, size, sha256, created_ts, uploaded_ts, expires_ts`

// InsertMedia stores a new media row; a unique violation means the ID is taken.
func InsertMedia(ctx context.Context, q Querier, m *Media) error {
	_, err := q.ExecContext(ctx, `INSERT INTO media (`+mediaColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		m.ServerName, m.MediaID, m.UserID, m.ContentType, m.UploadName, m.Size, m.SHA256, m.CreatedTS, m.UploadedTS, m.ExpiresTS)
	if err != nil {
		return fmt.Errorf("insert media %s/%s: %w", m.ServerName, m.MediaID, err)
	}
	return nil
}

// GetMedia returns one media row; ErrNotFound if unknown.
func GetMedia(ctx context.Context, q Querier, serverName, mediaID string) (*Media, error) {
	var m Media
	err := q.QueryRowContext(ctx, `SELECT `+mediaColumns+` FROM media WHERE server_name = $1 AND media_id = $2`, serverName, mediaID).
		Scan(&m.ServerName, &m.MediaID, &m.UserID, &m.ContentType, &m.UploadName, &m.Size, &m.SHA256, &m.CreatedTS, &m.UploadedTS, &m.ExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get media %s/%s: %w", serverName, mediaID, err)
	}
	return &m, nil
}

// CompleteMedia fills in the content of a media ID created for asynchronous upload.
// It succeeds only once, for the creating user, before the ID expires: ok is false
// when no such empty, unexpired row of that user exists.
func CompleteMedia(ctx context.Context, q Querier, m *Media, nowMS int64) (ok bool, err error) {
	res, err := q.ExecContext(ctx, `UPDATE media SET content_type = $1, upload_name = $2, size = $3, sha256 = $4, uploaded_ts = $5
		WHERE server_name = $6 AND media_id = $7 AND user_id = $8 AND sha256 = '' AND expires_ts > $9`,
		m.ContentType, m.UploadName, m.Size, m.SHA256, m.UploadedTS, m.ServerName, m.MediaID, m.UserID, nowMS)
	if err != nil {
		return false, fmt.Errorf("complete media %s/%s: %w", m.ServerName, m.MediaID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

// CountPendingMedia counts a user's created-but-not-uploaded, unexpired media IDs.
func CountPendingMedia(ctx context.Context, q Querier, userID string, nowMS int64) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1 AND sha256 = '' AND expires_ts > $2`, userID, nowMS).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count pending media: %w", err)
	}
	return n, nil
}

// UserMediaBytes is the total size of the media a user uploaded (for quotas).
func UserMediaBytes(ctx context.Context, q Querier, userID string) (int64, error) {
	var n sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT SUM(size) FROM media WHERE user_id = $1`, userID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sum media size: %w", err)
	}
	return n.Int64, nil
}

// MediaHashInUse reports whether any media or thumbnail row still refers to a content hash.
func MediaHashInUse(ctx context.Context, q Querier, sha256 string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)`, sha256).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("media hash in use: %w", err)
	}
	return n > 0, nil
}

// GetMediaThumbnail returns a cached thumbnail; ErrNotFound if none was generated.
func GetMediaThumbnail(ctx context.Context, q Querier, serverName, mediaID string, width, height int, method string) (*MediaThumbnail, error) {
	t := MediaThumbnail{ServerName: serverName, MediaID: mediaID, Width: width, Height: height, Method: method}
	err := q.QueryRowContext(ctx, `SELECT content_type, size, sha256, created_ts FROM media_thumbnails
		WHERE server_name = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`,
		serverName, mediaID, width, height, method).Scan(&t.ContentType, &t.Size, &t.SHA256, &t.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get thumbnail: %w", err)
	}
	return &t, nil
}

// PutMediaThumbnail records a generated thumbnail; a concurrent identical insert is not an error.
func PutMediaThumbnail(ctx context.Context, q Querier, t *MediaThumbnail) error {
	_, err := q.ExecContext(ctx, `INSERT INTO media_thumbnails (server_name, media_id, width, height, method, content_type, size, sha256, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (server_name, media_id, width, height, method) DO NOTHING`,
		t.ServerName, t.MediaID, t.Width, t.Height, t.Method, t.ContentType, t.Size, t.SHA256, t.CreatedTS)
	if err != nil {
		return fmt.Errorf("put thumbnail: %w", err)
	}
	return nil
}

// GetURLPreview returns the cached Open Graph JSON of a URL fetched at or after minTS.
func GetURLPreview(ctx context.Context, q Querier, url string, minTS int64) (string, error) {
	var og string
	err := q.QueryRowContext(ctx, `SELECT og_json FROM media_url_previews WHERE url = $1 AND fetched_ts >= $2`, url, minTS).Scan(&og)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("get url preview: %w", err)
	}
	return og, nil
}

// PutURLPreview caches the Open Graph JSON of a URL.
func PutURLPreview(ctx context.Context, q Querier, url, og string, fetchedTS int64) error {
	_, err := q.ExecContext(ctx, `INSERT INTO media_url_previews (url, og_json, fetched_ts) VALUES ($1, $2, $3)
		ON CONFLICT (url) DO UPDATE SET og_json = excluded.og_json, fetched_ts = excluded.fetched_ts`, url, og, fetchedTS)
	if err != nil {
		return fmt.Errorf("put url preview: %w", err)
	}
	return nil
}
