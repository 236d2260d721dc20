package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// errStub answers endpoints that are declared in the route table but not built yet.
var errStub = httputil.NewError(http.StatusNotImplemented, "M_UNRECOGNIZED", "Not implemented yet")
