package config

import "fmt"

// header is written at the top of generated config files.
const header = `# Myelin configuration. Every key is documented in docs/configuration.md.
# Relative paths (signing_key_path, database.dsn for SQLite, ...) are resolved
# against data_dir; data_dir itself is relative to the working directory.
`

// Generate renders cfg as a commented YAML config file.
func Generate(cfg *Config) ([]byte, error) {
	body, err := cfg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("render config: %w", err)
	}
	return append([]byte(header), body...), nil
}
