package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/cmd/myelin/app"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// rotateSigningKey makes a new signing key current. The old key is recorded as retired
// now (published in old_verify_keys with expired_ts, so events it signed still verify)
// and the key file is replaced atomically. Restart the server to sign with the new key.
func rotateSigningKey(args []string) error {
	fs := flag.NewFlagSet("myelin rotate-signing-key", flag.ExitOnError)
	var f app.Flags
	f.Register(fs)
	_ = fs.Parse(args)
	cfg, _, _, err := app.LoadConfig(f)
	if err != nil {
		return err
	}
	logrus.SetLevel(logrus.WarnLevel)
	path := cfg.Path(cfg.SigningKeyPath)
	old, err := config.LoadSigningKey(path)
	if err != nil {
		return err
	}
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg.Database, cfg.DataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	next, err := config.GenerateSigningKey()
	if err != nil {
		return err
	}
	tmp := path + ".new"
	_ = os.Remove(tmp)
	if err := config.WriteSigningKey(tmp, next); err != nil {
		return err
	}
	pub := base64.RawStdEncoding.EncodeToString(old.Public())
	if err := storage.RetireOwnSigningKey(ctx, db, string(old.ID), pub, storage.NowMS()); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace signing key: %w", err)
	}
	fmt.Printf("retired %s, new signing key %s (restart the server to use it)\n", old.ID, next.ID)
	return nil
}
