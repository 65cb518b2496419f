package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// Load builds a Config from defaults, the YAML file named by --config (or
// MESHPROXY_CONFIG), the environment and the flags in args, in that order of
// rising precedence. getenv is usually os.Getenv; tests pass their own.
//
// Unknown YAML keys and unknown flags are errors, so a typo is never silently
// ignored.
func Load(name string, args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML configuration file (env MESHPROXY_CONFIG)")
	// Flags are recorded first and applied last, so they win over the file
	// and the environment whatever their position on the command line.
	flagValues := map[string][]string{}
	defaults := Default()
	for _, s := range settings {
		usage := s.usage + " (env " + s.env() + ")"
		if s.get != nil {
			if d := s.get(&defaults); d != "" {
				usage += " (default " + d + ")"
			}
		}
		record := func(v string) error {
			flagValues[s.name] = append(flagValues[s.name], v)
			return nil
		}
		if s.isBool {
			fs.BoolFunc(s.name, usage, record)
		} else {
			fs.Func(s.name, usage, record)
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("%w: unexpected arguments %q", ErrInvalid, fs.Args())
	}

	cfg := Default()
	path := *configPath
	if path == "" {
		path = getenv(envPrefix + "CONFIG")
	}
	if path != "" {
		if err := cfg.loadFile(path); err != nil {
			return Config{}, err
		}
		cfg.Path = path
	}
	for _, s := range settings {
		v := getenv(s.env())
		if v == "" && s.name == "spiffe-socket" {
			// The SPIFFE standard variable, read by every Workload API client.
			v = getenv("SPIFFE_ENDPOINT_SOCKET")
		}
		if v == "" {
			continue
		}
		if s.repeated {
			// A list in the environment replaces the file's, as a
			// flag does.
			if err := s.set(&cfg, ""); err != nil {
				return Config{}, err
			}
		}
		if err := s.set(&cfg, v); err != nil {
			return Config{}, fmt.Errorf("%w: %s=%q: %v", ErrInvalid, s.env(), v, err)
		}
	}
	for _, s := range settings {
		vs := flagValues[s.name]
		if s.repeated && len(vs) > 0 {
			// A repeatable flag replaces what the file and the
			// environment said rather than adding to it.
			if err := s.set(&cfg, ""); err != nil {
				return Config{}, err
			}
		}
		for _, v := range vs {
			if err := s.set(&cfg, v); err != nil {
				return Config{}, fmt.Errorf("%w: -%s=%q: %v", ErrInvalid, s.name, v, err)
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// LoadFile returns the defaults overlaid with the YAML file at path, checked:
// what the proxy re-reads when the file changes.
func LoadFile(path string) (Config, error) {
	cfg := Default()
	if err := cfg.loadFile(path); err != nil {
		return Config{}, err
	}
	cfg.Path = path
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loadFile overlays the YAML file at path onto c.
func (c *Config) loadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	return nil
}
