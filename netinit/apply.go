package netinit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Apply installs c's rules for family f in the current network namespace,
// replacing meshproxy's rules if they are already there; running it twice
// leaves the same rules as running it once. It reads the nat table with
// f.SaveCommand() and writes with f.RestoreCommand() --noflush in one
// transaction, so a failure leaves the table as it was. An invalid c is
// refused before any command runs.
func Apply(ctx context.Context, c Config, f Family) error {
	if err := c.Validate(); err != nil {
		return err
	}
	saved, err := save(ctx, f)
	if err != nil {
		return err
	}
	script, err := applyScript(c, f, parseSaved(saved))
	if err != nil {
		return err
	}
	return restore(ctx, f, script)
}

// Remove deletes meshproxy's chains for family f, and the rules that jump to
// them, from the current network namespace; every other rule stays. When
// nothing of meshproxy's is installed it changes nothing and succeeds.
func Remove(ctx context.Context, f Family) error {
	if !f.valid() {
		return fmt.Errorf("%w: unknown address family %v", ErrInvalidConfig, f)
	}
	saved, err := save(ctx, f)
	if err != nil {
		return err
	}
	script := removeScript(f, parseSaved(saved))
	if script == nil {
		return nil
	}
	return restore(ctx, f, script)
}

// save returns f's nat table as iptables-save prints it.
func save(ctx context.Context, f Family) ([]byte, error) {
	cmd := exec.CommandContext(ctx, f.SaveCommand(), "-t", "nat")
	out, err := cmd.Output()
	if err != nil {
		return nil, commandError(f.SaveCommand(), err)
	}
	return out, nil
}

// restore feeds script to f's restore command. --noflush keeps every chain
// the script does not declare; --wait waits for the xtables lock rather than
// failing when another program (a CNI plugin, say) holds it.
func restore(ctx context.Context, f Family, script []byte) error {
	cmd := exec.CommandContext(ctx, f.RestoreCommand(), "--noflush", "--wait")
	cmd.Stdin = bytes.NewReader(script)
	if _, err := cmd.Output(); err != nil {
		return commandError(f.RestoreCommand(), err)
	}
	return nil
}

// commandError adds what the command printed on stderr (iptables-restore
// names the failing line there) to err.
func commandError(name string, err error) error {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if msg := strings.TrimSpace(string(exitErr.Stderr)); msg != "" {
			return fmt.Errorf("%s: %w: %s", name, err, msg)
		}
	}
	return fmt.Errorf("%s: %w", name, err)
}
