package clientapi

import "net/http"

// STUB: device, profile, account data, filter and OpenID handlers are being implemented.

func (s *Server) getDevices(r *http.Request) (any, error)         { return nil, errStub }
func (s *Server) getDevice(r *http.Request) (any, error)          { return nil, errStub }
func (s *Server) putDevice(r *http.Request) (any, error)          { return nil, errStub }
func (s *Server) deleteDevice(r *http.Request) (any, error)       { return nil, errStub }
func (s *Server) postDeleteDevices(r *http.Request) (any, error)  { return nil, errStub }
func (s *Server) getProfile(r *http.Request) (any, error)         { return nil, errStub }
func (s *Server) getProfileField(r *http.Request) (any, error)    { return nil, errStub }
func (s *Server) putProfileField(r *http.Request) (any, error)    { return nil, errStub }
func (s *Server) deleteProfileField(r *http.Request) (any, error) { return nil, errStub }
func (s *Server) getAccountData(r *http.Request) (any, error)     { return nil, errStub }
func (s *Server) putAccountData(r *http.Request) (any, error)     { return nil, errStub }
func (s *Server) postFilter(r *http.Request) (any, error)         { return nil, errStub }
func (s *Server) getFilter(r *http.Request) (any, error)          { return nil, errStub }
func (s *Server) postOpenIDToken(r *http.Request) (any, error)    { return nil, errStub }
