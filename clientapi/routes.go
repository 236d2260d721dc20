package clientapi

import "net/http"

// routes is the route table of the client-server API, in one place.
// Handlers live in the file of their area (discovery.go, register.go, login.go, ...).
func (s *Server) routes() []route {
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	root := []string{""}
	synapseAdmin := []string{"/_synapse/admin/v1"}
	return []route{
		// Discovery and server information.
		{method: get, prefixes: []string{"/_matrix/client"}, path: "/versions", auth: authOptional, h: s.getVersions},
		{method: get, prefixes: root, path: "/.well-known/matrix/client", h: s.getWellKnownClient},
		{method: get, prefixes: root, path: "/.well-known/matrix/server", h: s.getWellKnownServer},
		{method: get, prefixes: root, path: "/health", raw: s.getHealth},
		{method: get, prefixes: clientV3, path: "/capabilities", auth: authRequired, limited: true, h: s.getCapabilities},

		// Registration.
		{method: post, prefixes: clientV3, path: "/register", auth: authOptional, limited: true, h: s.postRegister},
		{method: get, prefixes: clientV3, path: "/register/available", limited: true, h: s.getRegisterAvailable},
		{method: get, prefixes: clientV1, path: "/register/m.login.registration_token/validity", limited: true, h: s.getRegistrationTokenValidity},
		{method: get, prefixes: synapseAdmin, path: "/register", limited: true, h: s.getSharedSecretNonce},
		{method: post, prefixes: synapseAdmin, path: "/register", limited: true, h: s.postSharedSecretRegister},

		// Login, tokens, logout.
		{method: get, prefixes: clientV3, path: "/login", limited: true, h: s.getLoginFlows},
		{method: post, prefixes: clientV3, path: "/login", limited: true, h: s.postLogin},
		{method: post, prefixes: clientV3, path: "/refresh", limited: true, h: s.postRefresh},
		{method: post, prefixes: clientV3, path: "/logout", auth: authRequired, h: s.postLogout},
		{method: post, prefixes: clientV3, path: "/logout/all", auth: authRequired, h: s.postLogoutAll},

		// Account management.
		{method: get, prefixes: clientV3, path: "/account/whoami", auth: authRequired, h: s.getWhoami},
		{method: post, prefixes: clientV3, path: "/account/password", auth: authRequired, limited: true, h: s.postPassword},
		{method: post, prefixes: clientV3, path: "/account/deactivate", auth: authRequired, limited: true, h: s.postDeactivate},

		// Devices.
		{method: get, prefixes: clientV3, path: "/devices", auth: authRequired, limited: true, h: s.getDevices},
		{method: get, prefixes: clientV3, path: "/devices/{deviceId}", auth: authRequired, limited: true, h: s.getDevice},
		{method: put, prefixes: clientV3, path: "/devices/{deviceId}", auth: authRequired, limited: true, h: s.putDevice},
		{method: del, prefixes: clientV3, path: "/devices/{deviceId}", auth: authRequired, limited: true, h: s.deleteDevice},
		{method: post, prefixes: clientV3, path: "/delete_devices", auth: authRequired, limited: true, h: s.postDeleteDevices},

		// Profiles.
		{method: get, prefixes: clientV3, path: "/profile/{userId}", auth: authOptional, limited: true, h: s.getProfile},
		{method: get, prefixes: clientV3, path: "/profile/{userId}/{field}", auth: authOptional, limited: true, h: s.getProfileField},
		{method: put, prefixes: clientV3, path: "/profile/{userId}/{field}", auth: authRequired, limited: true, h: s.putProfileField},
		{method: del, prefixes: clientV3, path: "/profile/{userId}/{field}", auth: authRequired, limited: true, h: s.deleteProfileField},

		// Account data.
		{method: get, prefixes: clientV3, path: "/user/{userId}/account_data/{type}", auth: authRequired, limited: true, h: s.getAccountData},
		{method: put, prefixes: clientV3, path: "/user/{userId}/account_data/{type}", auth: authRequired, limited: true, h: s.putAccountData},
		{method: get, prefixes: clientV3, path: "/user/{userId}/rooms/{roomId}/account_data/{type}", auth: authRequired, limited: true, h: s.getAccountData},
		{method: put, prefixes: clientV3, path: "/user/{userId}/rooms/{roomId}/account_data/{type}", auth: authRequired, limited: true, h: s.putAccountData},
		// Thread subscriptions (MSC4306).
		{method: get, prefixes: unstable, path: "/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription", auth: authRequired, h: s.getThreadSubscription},
		{method: put, prefixes: unstable, path: "/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription", auth: authRequired, limited: true, h: s.putThreadSubscription},
		{method: del, prefixes: unstable, path: "/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription", auth: authRequired, limited: true, h: s.deleteThreadSubscription},
		// Delayed events (MSC4140): the delay ID is the credential for acting on one.
		{method: get, prefixes: unstable, path: "/org.matrix.msc4140/delayed_events", auth: authRequired, h: s.getDelayedEvents},
		{method: post, prefixes: unstable, path: "/org.matrix.msc4140/delayed_events/{delayId}", limited: true, h: s.postDelayedEvent},
		{method: post, prefixes: unstable, path: "/org.matrix.msc4140/delayed_events/{delayId}/{action}", limited: true, h: s.postDelayedEventAction},
		{method: del, prefixes: unstable, path: "/org.matrix.msc3391/user/{userId}/account_data/{type}", auth: authRequired, limited: true, h: s.deleteAccountData},
		{method: del, prefixes: unstable, path: "/org.matrix.msc3391/user/{userId}/rooms/{roomId}/account_data/{type}", auth: authRequired, limited: true, h: s.deleteAccountData},

		// Filters.
		{method: post, prefixes: clientV3, path: "/user/{userId}/filter", auth: authRequired, limited: true, h: s.postFilter},
		{method: get, prefixes: clientV3, path: "/user/{userId}/filter/{filterId}", auth: authRequired, limited: true, h: s.getFilter},

		// OpenID tokens for integrations.
		{method: post, prefixes: clientV3, path: "/user/{userId}/openid/request_token", auth: authRequired, limited: true, h: s.postOpenIDToken},

		// End-to-end encryption keys (keys.go, crosssigning.go). Not rate limited: clients
		// burst these legitimately (initial sync of a big account), and each is bounded.
		{method: post, prefixes: clientV3, path: "/keys/upload", auth: authRequired, h: s.postKeysUpload},
		{method: post, prefixes: clientV3, path: "/keys/query", auth: authRequired, h: s.postKeysQuery},
		{method: post, prefixes: clientV3, path: "/keys/claim", auth: authRequired, h: s.postKeysClaim},
		{method: get, prefixes: clientV3, path: "/keys/changes", auth: authRequired, h: s.getKeysChanges},
		{method: post, prefixes: clientV3, path: "/keys/device_signing/upload", auth: authRequired, limited: true, h: s.postDeviceSigningUpload},
		{method: post, prefixes: clientV3, path: "/keys/signatures/upload", auth: authRequired, limited: true, h: s.postSignaturesUpload},

		// Server-side key backup (keybackup.go).
		{method: post, prefixes: clientV3, path: "/room_keys/version", auth: authRequired, limited: true, h: s.postRoomKeysVersion},
		{method: get, prefixes: clientV3, path: "/room_keys/version", auth: authRequired, h: s.getRoomKeysVersion},
		{method: get, prefixes: clientV3, path: "/room_keys/version/{version}", auth: authRequired, h: s.getRoomKeysVersion},
		{method: put, prefixes: clientV3, path: "/room_keys/version/{version}", auth: authRequired, limited: true, h: s.putRoomKeysVersion},
		{method: del, prefixes: clientV3, path: "/room_keys/version/{version}", auth: authRequired, limited: true, h: s.deleteRoomKeysVersion},
		{method: get, prefixes: clientV3, path: "/room_keys/keys", auth: authRequired, h: s.getRoomKeys},
		{method: put, prefixes: clientV3, path: "/room_keys/keys", auth: authRequired, h: s.putRoomKeys},
		{method: del, prefixes: clientV3, path: "/room_keys/keys", auth: authRequired, h: s.deleteRoomKeys},
		{method: get, prefixes: clientV3, path: "/room_keys/keys/{roomId}", auth: authRequired, h: s.getRoomKeys},
		{method: put, prefixes: clientV3, path: "/room_keys/keys/{roomId}", auth: authRequired, h: s.putRoomKeys},
		{method: del, prefixes: clientV3, path: "/room_keys/keys/{roomId}", auth: authRequired, h: s.deleteRoomKeys},
		{method: get, prefixes: clientV3, path: "/room_keys/keys/{roomId}/{sessionId}", auth: authRequired, h: s.getRoomKeys},
		{method: put, prefixes: clientV3, path: "/room_keys/keys/{roomId}/{sessionId}", auth: authRequired, h: s.putRoomKeys},
		{method: del, prefixes: clientV3, path: "/room_keys/keys/{roomId}/{sessionId}", auth: authRequired, h: s.deleteRoomKeys},

		// Send-to-device messages (todevice.go).
		{method: put, prefixes: clientV3, path: "/sendToDevice/{eventType}/{txnId}", auth: authRequired, h: s.putSendToDevice},

		// Rooms (rooms.go, roomstate.go, membership.go, messages.go).
		{method: post, prefixes: clientV3, path: "/createRoom", auth: authRequired, limited: true, h: s.postCreateRoom},
		{method: put, prefixes: clientV3, path: "/rooms/{roomId}/send/{eventType}/{txnId}", auth: authRequired, limited: true, h: s.putSend},
		{method: put, prefixes: clientV3, path: "/rooms/{roomId}/state/{eventType}/{stateKey}", auth: authRequired, limited: true, h: s.putRoomStateEvent},
		{method: put, prefixes: clientV3, path: "/rooms/{roomId}/state/{eventType}", auth: authRequired, limited: true, h: s.putRoomStateEvent},
		{method: put, prefixes: clientV3, path: "/rooms/{roomId}/state/{eventType}/", auth: authRequired, limited: true, h: s.putRoomStateEvent},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/state/{eventType}/{stateKey}", auth: authRequired, h: s.getRoomStateEvent},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/state/{eventType}", auth: authRequired, h: s.getRoomStateEvent},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/state/{eventType}/", auth: authRequired, h: s.getRoomStateEvent},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/state", auth: authRequired, h: s.getRoomState},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/invite", auth: authRequired, limited: true, h: s.postInvite},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/join", auth: authRequired, limited: true, h: s.postJoinRoomID},
		{method: post, prefixes: clientV3, path: "/join/{roomIdOrAlias}", auth: authRequired, limited: true, h: s.postJoin},
		{method: post, prefixes: clientV3, path: "/knock/{roomIdOrAlias}", auth: authRequired, limited: true, h: s.postKnock},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/leave", auth: authRequired, limited: true, h: s.postLeave},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/forget", auth: authRequired, limited: true, h: s.postForget},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/kick", auth: authRequired, limited: true, h: s.postKick},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/ban", auth: authRequired, limited: true, h: s.postBan},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/unban", auth: authRequired, limited: true, h: s.postUnban},
		{method: get, prefixes: clientV3, path: "/joined_rooms", auth: authRequired, h: s.getJoinedRooms},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/members", auth: authRequired, h: s.getMembers},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/joined_members", auth: authRequired, h: s.getJoinedMembers},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/event/{eventId}", auth: authRequired, h: s.getRoomEvent},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/context/{eventId}", auth: authRequired, h: s.getContext},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/messages", auth: authRequired, h: s.getMessages},
		{method: post, prefixes: clientV3, path: "/search", auth: authRequired, limited: true, h: s.postSearch},
		{method: put, prefixes: clientV3, path: "/rooms/{roomId}/redact/{eventId}/{txnId}", auth: authRequired, limited: true, h: s.putRedact},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/report/{eventId}", auth: authRequired, limited: true, h: s.postReportEvent},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/report", auth: authRequired, limited: true, h: s.postReportRoom},

		// Room aliases, room directory, upgrades, tags, spaces, user directory, relations
		// (directory.go, publicrooms.go, upgrade.go, tags.go, hierarchy.go,
		// userdirectory.go, relations.go, timestamp.go).
		{method: put, prefixes: clientV3, path: "/directory/room/{roomAlias}", auth: authRequired, limited: true, h: s.putDirectoryRoom},
		{method: get, prefixes: clientV3, path: "/directory/room/{roomAlias}", auth: authOptional, limited: true, h: s.getDirectoryRoom},
		{method: del, prefixes: clientV3, path: "/directory/room/{roomAlias}", auth: authRequired, limited: true, h: s.deleteDirectoryRoom},
		{method: get, prefixes: clientV3, path: "/rooms/{roomId}/aliases", auth: authRequired, limited: true, h: s.getRoomAliases},
		{method: get, prefixes: clientV3, path: "/directory/list/room/{roomId}", auth: authOptional, limited: true, h: s.getDirectoryListRoom},
		{method: put, prefixes: clientV3, path: "/directory/list/room/{roomId}", auth: authRequired, limited: true, h: s.putDirectoryListRoom},
		{method: get, prefixes: clientV3, path: "/publicRooms", auth: authOptional, limited: true, h: s.getPublicRooms},
		{method: post, prefixes: clientV3, path: "/publicRooms", auth: authRequired, limited: true, h: s.postPublicRooms},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/upgrade", auth: authRequired, limited: true, h: s.postRoomUpgrade},
		{method: get, prefixes: clientV3, path: "/user/{userId}/rooms/{roomId}/tags", auth: authRequired, h: s.getRoomTags},
		{method: put, prefixes: clientV3, path: "/user/{userId}/rooms/{roomId}/tags/{tag}", auth: authRequired, limited: true, h: s.putRoomTag},
		{method: del, prefixes: clientV3, path: "/user/{userId}/rooms/{roomId}/tags/{tag}", auth: authRequired, limited: true, h: s.deleteRoomTag},
		{method: get, prefixes: clientV1, path: "/rooms/{roomId}/hierarchy", auth: authRequired, limited: true, h: s.getHierarchy},
		{method: get, prefixes: clientV1, path: "/room_summary/{roomIdOrAlias}", auth: authOptional, limited: true, h: s.getRoomSummary},
		{method: post, prefixes: clientV3, path: "/user_directory/search", auth: authRequired, limited: true, h: s.postUserDirectorySearch},
		{method: get, prefixes: clientV1, path: "/rooms/{roomId}/relations/{eventId}", auth: authRequired, h: s.getRelations},
		{method: get, prefixes: clientV1, path: "/rooms/{roomId}/relations/{eventId}/{relType}", auth: authRequired, h: s.getRelations},
		{method: get, prefixes: clientV1, path: "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", auth: authRequired, h: s.getRelations},
		{method: get, prefixes: clientV1, path: "/rooms/{roomId}/threads", auth: authRequired, h: s.getThreads},
		{method: get, prefixes: clientV1, path: "/rooms/{roomId}/timestamp_to_event", auth: authRequired, h: s.getTimestampToEvent},

		// Dehydrated devices, MSC3814 (dehydrated.go).
		{method: put, prefixes: unstable, path: "/org.matrix.msc3814.v1/dehydrated_device", auth: authRequired, limited: true, h: s.putDehydratedDevice},
		{method: get, prefixes: unstable, path: "/org.matrix.msc3814.v1/dehydrated_device", auth: authRequired, h: s.getDehydratedDevice},
		{method: del, prefixes: unstable, path: "/org.matrix.msc3814.v1/dehydrated_device", auth: authRequired, limited: true, h: s.deleteDehydratedDevice},
		{method: post, prefixes: unstable, path: "/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events", auth: authRequired, h: s.postDehydratedDeviceEvents},
		{method: get, prefixes: unstable, path: "/org.matrix.msc3814.v1/dehydrated_device/{deviceId}/events", auth: authRequired, h: s.getDehydratedDeviceEvents},

		// Sync, typing, receipts, read markers and presence (sync.go, typing.go, receipts.go, presence.go).
		{method: get, prefixes: clientV3, path: "/sync", auth: authRequired, h: s.getSync},
		{method: put, prefixes: clientV3, path: "/rooms/{roomId}/typing/{userId}", auth: authRequired, limited: true, h: s.putTyping},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/receipt/{receiptType}/{eventId}", auth: authRequired, limited: true, h: s.postReceipt},
		{method: post, prefixes: clientV3, path: "/rooms/{roomId}/read_markers", auth: authRequired, limited: true, h: s.postReadMarkers},
		{method: get, prefixes: clientV3, path: "/presence/{userId}/status", auth: authRequired, limited: true, h: s.getPresence},
		{method: put, prefixes: clientV3, path: "/presence/{userId}/status", auth: authRequired, limited: true, h: s.putPresence},

		// Push rules, pushers and notifications (pushrules.go, pushers.go, notifications.go).
		{method: get, prefixes: clientV3, path: "/pushrules/", auth: authRequired, h: s.getPushRules},
		{method: get, prefixes: clientV3, path: "/pushrules", auth: authRequired, h: s.getPushRules},
		{method: get, prefixes: clientV3, path: "/pushrules/{scope}/", auth: authRequired, h: s.getPushRules},
		{method: get, prefixes: clientV3, path: "/pushrules/{scope}/{kind}/{ruleId}", auth: authRequired, h: s.getPushRule},
		{method: put, prefixes: clientV3, path: "/pushrules/{scope}/{kind}/{ruleId}", auth: authRequired, limited: true, h: s.putPushRule},
		{method: del, prefixes: clientV3, path: "/pushrules/{scope}/{kind}/{ruleId}", auth: authRequired, limited: true, h: s.deletePushRule},
		{method: get, prefixes: clientV3, path: "/pushrules/{scope}/{kind}/{ruleId}/{attr:enabled|actions}", auth: authRequired, h: s.getPushRuleAttr},
		{method: put, prefixes: clientV3, path: "/pushrules/{scope}/{kind}/{ruleId}/{attr:enabled|actions}", auth: authRequired, limited: true, h: s.putPushRuleAttr},
		{method: get, prefixes: clientV3, path: "/pushers", auth: authRequired, h: s.getPushers},
		{method: post, prefixes: clientV3, path: "/pushers/set", auth: authRequired, limited: true, h: s.postPushersSet},
		{method: get, prefixes: clientV3, path: "/notifications", auth: authRequired, limited: true, h: s.getNotifications},

		// Media repository (media.go): authenticated v1 endpoints, uploads, and the legacy
		// unauthenticated v3/r0 download, thumbnail, config and preview_url.
		{method: get, prefixes: clientV1, path: "/media/config", auth: authRequired, h: s.getMediaConfig},
		{method: get, prefixes: clientV1, path: "/media/download/{serverName}/{mediaId}", auth: authRequired, raw: s.getMediaDownload},
		{method: get, prefixes: clientV1, path: "/media/download/{serverName}/{mediaId}/{fileName}", auth: authRequired, raw: s.getMediaDownload},
		{method: get, prefixes: clientV1, path: "/media/thumbnail/{serverName}/{mediaId}", auth: authRequired, raw: s.getMediaThumbnail},
		{method: get, prefixes: clientV1, path: "/media/preview_url", auth: authRequired, limited: true, h: s.getPreviewURL},
		{method: post, prefixes: mediaV3, path: "/upload", auth: authRequired, limited: true, maxBody: s.cfg.Media.MaxUploadBytes, h: s.postUpload},
		{method: put, prefixes: mediaV3, path: "/upload/{serverName}/{mediaId}", auth: authRequired, limited: true, maxBody: s.cfg.Media.MaxUploadBytes, h: s.putUpload},
		{method: post, prefixes: mediaV1, path: "/create", auth: authRequired, limited: true, h: s.postMediaCreate},
		{method: get, prefixes: mediaV3, path: "/config", auth: authOptional, h: s.getMediaConfig},
		{method: get, prefixes: mediaV3, path: "/download/{serverName}/{mediaId}", raw: s.getMediaDownload},
		{method: get, prefixes: mediaV3, path: "/download/{serverName}/{mediaId}/{fileName}", raw: s.getMediaDownload},
		{method: get, prefixes: mediaV3, path: "/thumbnail/{serverName}/{mediaId}", raw: s.getMediaThumbnail},
		{method: get, prefixes: mediaV3, path: "/preview_url", auth: authRequired, limited: true, h: s.getPreviewURL},

		// Synapse-compatible admin API: server notices (admins only; servernotices.go).
		{method: post, prefixes: synapseAdmin, path: "/send_server_notice", auth: authRequired, limited: true, h: s.postServerNotice},
		{method: put, prefixes: synapseAdmin, path: "/send_server_notice/{txnId}", auth: authRequired, limited: true, h: s.putServerNotice},
		// Synapse-compatible admin API: registration tokens (admins only).
		{method: get, prefixes: synapseAdmin, path: "/registration_tokens", auth: authRequired, limited: true, h: s.getRegistrationTokens},
		{method: post, prefixes: synapseAdmin, path: "/registration_tokens/new", auth: authRequired, limited: true, h: s.postRegistrationToken},
		{method: get, prefixes: synapseAdmin, path: "/registration_tokens/{token}", auth: authRequired, limited: true, h: s.getRegistrationToken},
		{method: put, prefixes: synapseAdmin, path: "/registration_tokens/{token}", auth: authRequired, limited: true, h: s.putRegistrationToken},
		{method: del, prefixes: synapseAdmin, path: "/registration_tokens/{token}", auth: authRequired, limited: true, h: s.deleteRegistrationToken},
	}
}
