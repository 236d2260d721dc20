package keys

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// txnScopeToDevice scopes send-to-device transaction IDs in the transaction_ids table.
const txnScopeToDevice = "sendToDevice"

// SendToDevice puts messages (user ID → device ID or "*" → content) into the inboxes of
// the recipients' devices (PUT /sendToDevice/{eventType}/{txnId}). A transaction ID that
// the sending device used before makes the call a no-op, so retries never duplicate.
// "*" means every device of the user; a device named as well gets its own content only.
// Unknown devices are skipped. Messages for users of other servers are queued for their
// servers (through Remote) in the same transaction.
// It returns the highest to_device stream position written (0 when nothing was).
func (s *Service) SendToDevice(ctx context.Context, sender, senderDevice, eventType, txnID string, messages map[string]map[string]json.RawMessage) (int64, error) {
	if eventType == "" || len(eventType) > 255 {
		return 0, httputil.InvalidParam("invalid event type")
	}
	if txnID == "" {
		return 0, httputil.InvalidParam("missing transaction ID")
	}
	if messages == nil {
		return 0, httputil.MissingParam("messages is required")
	}
	total := 0
	for _, devs := range messages {
		total += len(devs)
	}
	if total > MaxToDeviceMessages {
		return 0, httputil.TooLarge("at most %d messages may be sent at once", MaxToDeviceMessages)
	}
	users := make([]string, 0, len(messages))
	for u := range messages {
		users = append(users, u)
	}
	sort.Strings(users)
	var deliveries []storage.ToDeviceDelivery
	var local []string
	remote := 0
	remoteMsgs := map[string]map[string]json.RawMessage{}
	for _, userID := range users {
		domain, err := domainOf(userID)
		if err != nil {
			return 0, err
		}
		for deviceID, content := range messages[userID] {
			if !isJSONObject(content) {
				return 0, httputil.BadJSON("the message for %s/%s must be a JSON object", userID, deviceID)
			}
		}
		if s.isLocal(domain) {
			local = append(local, userID)
		} else {
			remote += len(messages[userID])
			remoteMsgs[userID] = messages[userID]
		}
	}
	known, err := storage.DeviceIDsOfUsers(ctx, s.db, local)
	if err != nil {
		return 0, err
	}
	for _, userID := range local {
		for _, deviceID := range known[userID] {
			content, ok := messages[userID][deviceID]
			if !ok {
				content, ok = messages[userID]["*"]
			}
			if ok {
				deliveries = append(deliveries, storage.ToDeviceDelivery{UserID: userID, DeviceID: deviceID, Content: content})
			}
		}
	}
	if remote > 0 && s.remote == nil {
		logrus.WithContext(ctx).WithFields(logrus.Fields{"user_id": sender, "messages": remote}).
			Info("dropping send-to-device messages for remote users: federation is not available yet")
	}
	var pos int64
	var servers []string
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		fresh, err := storage.ClaimTransactionID(ctx, tx, sender, senderDevice, txnScopeToDevice, txnID)
		if err != nil || !fresh {
			return err
		}
		if remote > 0 && s.remote != nil {
			// The message ID is unique per sender: its device and transaction ID.
			if servers, err = s.remote.QueueToDevice(ctx, tx, sender, eventType, senderDevice+"/"+txnID, remoteMsgs); err != nil {
				return err
			}
		}
		pos, err = storage.InsertToDevice(ctx, tx, sender, eventType, deliveries)
		return err
	})
	if err == nil && len(servers) > 0 {
		s.remote.Wake(servers...)
	}
	return pos, err
}
