package keys

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// DehydratedDevicePut is the body of PUT /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device.
type DehydratedDevicePut struct {
	DeviceID                 string                     `json:"device_id"`
	DeviceData               json.RawMessage            `json:"device_data"`
	InitialDeviceDisplayName *string                    `json:"initial_device_display_name,omitempty"`
	DeviceKeys               json.RawMessage            `json:"device_keys,omitempty"`
	OneTimeKeys              map[string]json.RawMessage `json:"one_time_keys,omitempty"`
	FallbackKeys             map[string]json.RawMessage `json:"fallback_keys,omitempty"`
}

// DehydratedDeviceInfo is the answer of GET …/dehydrated_device.
type DehydratedDeviceInfo struct {
	DeviceID   string          `json:"device_id"`
	DeviceData json.RawMessage `json:"device_data"`
}

// DehydratedEvents is the answer of POST …/dehydrated_device/{device_id}/events.
type DehydratedEvents struct {
	Events    []storage.ToDeviceMessage `json:"events"`
	NextBatch string                    `json:"next_batch"`
}

// MaxDehydratedEvents is how many to-device events one POST …/events returns at most.
const MaxDehydratedEvents = 100

var errNoDehydratedDevice = httputil.NotFound("No dehydrated device available")

func randomDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [10]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b[:])
}

// PutDehydratedDevice creates the user's dehydrated device with its keys, replacing
// (and deleting) the previous one. The device ID must not be one of the user's other devices.
func (s *Service) PutDehydratedDevice(ctx context.Context, userID string, req DehydratedDevicePut) (string, error) {
	if !isJSONObject(req.DeviceData) {
		return "", httputil.BadJSON("device_data must be a JSON object")
	}
	if len(req.DeviceData) > 256*1024 {
		return "", httputil.TooLarge("device_data is too large")
	}
	deviceID := req.DeviceID
	if deviceID == "" {
		deviceID = randomDeviceID()
	}
	if len(deviceID) > 255 {
		return "", httputil.InvalidParam("device_id is too long")
	}
	// The device is new (any previous one of this ID is replaced), so keys are checked
	// against what the request carries only.
	p, err := prepareUpload(userID, deviceID, UploadRequest{DeviceKeys: req.DeviceKeys, OneTimeKeys: req.OneTimeKeys, FallbackKeys: req.FallbackKeys}, "")
	if err != nil {
		return "", err
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		old, err := storage.GetDehydratedDevice(ctx, tx, userID)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		hadOld := err == nil
		if !hadOld || old.DeviceID != deviceID {
			if _, err := storage.GetDevice(ctx, tx, userID, deviceID); err == nil {
				return httputil.InvalidParam("device_id %q is already one of your devices", deviceID)
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		if hadOld {
			if err := deleteDeviceTx(ctx, tx, userID, old.DeviceID); err != nil {
				return err
			}
		}
		now := storage.NowMS()
		if err := storage.InsertDevice(ctx, tx, storage.Device{UserID: userID, DeviceID: deviceID, DisplayName: req.InitialDeviceDisplayName, CreatedTS: now}); err != nil {
			return err
		}
		if err := storage.PutDehydratedDevice(ctx, tx, storage.DehydratedDevice{UserID: userID, DeviceID: deviceID, DeviceData: req.DeviceData, CreatedTS: now}); err != nil {
			return err
		}
		return p.apply(ctx, tx)
	})
	if err != nil {
		return "", err
	}
	return deviceID, nil
}

// deleteDeviceTx deletes a dehydrated device: its row (it has no access tokens) and its
// end-to-end encryption data.
func deleteDeviceTx(ctx context.Context, tx *storage.Tx, userID, deviceID string) error {
	if _, err := storage.DeleteDevice(ctx, tx, userID, deviceID); err != nil {
		return err
	}
	return storage.DeleteDeviceE2EE(ctx, tx, userID, deviceID)
}

// GetDehydratedDevice returns the user's dehydrated device; 404 M_NOT_FOUND when none.
func (s *Service) GetDehydratedDevice(ctx context.Context, userID string) (*DehydratedDeviceInfo, error) {
	d, err := storage.GetDehydratedDevice(ctx, s.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNoDehydratedDevice
	}
	if err != nil {
		return nil, err
	}
	return &DehydratedDeviceInfo{DeviceID: d.DeviceID, DeviceData: d.DeviceData}, nil
}

// DeleteDehydratedDevice deletes the user's dehydrated device and returns its ID.
func (s *Service) DeleteDehydratedDevice(ctx context.Context, userID string) (string, error) {
	var deviceID string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		d, err := storage.GetDehydratedDevice(ctx, tx, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return errNoDehydratedDevice
		}
		if err != nil {
			return err
		}
		deviceID = d.DeviceID
		if err := storage.DeleteDehydratedDevice(ctx, tx, userID); err != nil {
			return err
		}
		return deleteDeviceTx(ctx, tx, userID, d.DeviceID)
	})
	return deviceID, err
}

// DehydratedDeviceEvents returns the next to-device events of the user's dehydrated device
// after nextBatch ("" from the start), deleting those up to nextBatch: a client that asks
// with a next_batch token has received everything before it.
func (s *Service) DehydratedDeviceEvents(ctx context.Context, userID, deviceID, nextBatch string) (*DehydratedEvents, error) {
	d, err := storage.GetDehydratedDevice(ctx, s.db, userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && d.DeviceID != deviceID) {
		return nil, httputil.Forbidden("%s is not your dehydrated device", deviceID)
	}
	if err != nil {
		return nil, err
	}
	var since int64
	if nextBatch != "" {
		if since, err = strconv.ParseInt(nextBatch, 10, 64); err != nil || since < 0 {
			return nil, httputil.InvalidParam("invalid next_batch")
		}
		if _, err := storage.AckToDevice(ctx, s.db, userID, deviceID, since); err != nil {
			return nil, err
		}
	}
	msgs, err := storage.ToDeviceSince(ctx, s.db, userID, deviceID, since, MaxDehydratedEvents)
	if err != nil {
		return nil, err
	}
	out := &DehydratedEvents{Events: msgs, NextBatch: strconv.FormatInt(since, 10)}
	if out.Events == nil {
		out.Events = []storage.ToDeviceMessage{}
	}
	if len(msgs) > 0 {
		out.NextBatch = strconv.FormatInt(msgs[len(msgs)-1].Pos, 10)
	}
	return out, nil
}
