package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/berthrun/berth/internal/errclass"
)

// exitFailure is the exit code of any failure of berthctl itself, as
// docker uses it, so that it stands apart from a container's own codes.
const exitFailure = 125

// report prints err as the one line scripts can parse.
func report(w io.Writer, err error) {
	fmt.Fprintf(w, "berthctl: %s: %s\n", errclass.Name(err), oneLine(err.Error()))
}

var newlines = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")

func oneLine(s string) string {
	return strings.TrimSpace(newlines.Replace(s))
}

// usageErrorf is bad usage of berthctl: invalid-argument, without the
// class's own text repeated in the message.
func usageErrorf(format string, a ...any) error {
	return errdefs.ErrInvalidArgument.WithMessage(fmt.Sprintf(format, a...))
}

// flagError turns a flag package error into an invalid-argument one.
func flagError(fs *flag.FlagSet, err error) error {
	return usageErrorf("%s: %v", fs.Name(), err)
}

// errHelpShown ends a command whose -h printed its usage: exit 0.
var errHelpShown = errors.New("help shown")

// failures gathers the errors of a command acting on several objects: the
// first error's class is the command's, every message is reported.
type failures struct {
	first error
	more  []string
}

func (f *failures) add(err error) {
	switch {
	case err == nil:
	case f.first == nil:
		f.first = err
	default:
		f.more = append(f.more, err.Error())
	}
}

func (f *failures) err() error {
	if len(f.more) > 0 {
		return fmt.Errorf("%w; %s", f.first, strings.Join(f.more, "; "))
	}
	return f.first
}
