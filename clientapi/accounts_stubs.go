package clientapi

import "net/http"

// STUB: registration, login, logout and account handlers are being implemented.

func (s *Server) postRegister(r *http.Request) (any, error)                 { return nil, errStub }
func (s *Server) getRegisterAvailable(r *http.Request) (any, error)         { return nil, errStub }
func (s *Server) getRegistrationTokenValidity(r *http.Request) (any, error) { return nil, errStub }
func (s *Server) getSharedSecretNonce(r *http.Request) (any, error)         { return nil, errStub }
func (s *Server) postSharedSecretRegister(r *http.Request) (any, error)     { return nil, errStub }
func (s *Server) getLoginFlows(r *http.Request) (any, error)                { return nil, errStub }
func (s *Server) postLogin(r *http.Request) (any, error)                    { return nil, errStub }
func (s *Server) postRefresh(r *http.Request) (any, error)                  { return nil, errStub }
func (s *Server) postLogout(r *http.Request) (any, error)                   { return nil, errStub }
func (s *Server) postLogoutAll(r *http.Request) (any, error)                { return nil, errStub }
func (s *Server) getWhoami(r *http.Request) (any, error)                    { return nil, errStub }
func (s *Server) postPassword(r *http.Request) (any, error)                 { return nil, errStub }
func (s *Server) postDeactivate(r *http.Request) (any, error)               { return nil, errStub }
