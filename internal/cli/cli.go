// Package cli is the skeleton the Meridian commands (regional, hub, geodns)
// share: subcommand dispatch, one- and two-word commands ("serve",
// "keys rotate"), help for the program, every command group and every
// command, and one exit-code rule:
//
//	0  success, and every form of help (-h, --help, help, a bare group)
//	1  the command ran and failed (the error on stderr)
//	2  the command line is wrong (the message on stderr)
//
// A command declares its flags on a FlagSet and returns the function that
// runs once they are parsed, so help never loads a config or opens a store.
package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Stdio is what a command reads from and writes to.
type Stdio struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// RunFunc runs a command; args are the positional arguments left after its
// flags.
type RunFunc func(ctx context.Context, args []string, s Stdio) error

// Command is one command of a program.
type Command struct {
	// Name is one word ("serve") or a group and a word ("keys rotate").
	Name string
	// Args names the positional arguments for the usage line ("REGION");
	// empty means the command takes none and any is a usage error.
	Args string
	// Summary is one line for the listing.
	Summary string
	// Setup declares the command's flags and returns what runs after them.
	Setup func(fs *flag.FlagSet) RunFunc
}

// Program is a command-line program made of commands.
type Program struct {
	Name string
	// Usage is printed, to stdout, for `NAME`, `NAME help`, `NAME -h`.
	Usage    string
	Commands []Command
	// Default, if set, is the command run when the first argument is not a
	// command name (geodns serves by default). Without it, no arguments
	// print the usage.
	Default string
}

// UsageError is a wrong command line: exit status 2.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return UsageError{fmt.Sprintf(format, a...)} }

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "help" }

// Run runs the program on args (without the program name) and returns the
// exit status.
func (p *Program) Run(ctx context.Context, args []string, s Stdio) int {
	if len(args) > 0 && args[0] == "help" && len(args) > 1 {
		// "help keys rotate" is "keys rotate --help".
		args = append(slices.Clone(args[1:]), "--help")
	}
	if (len(args) == 0 && p.Default == "") || (len(args) > 0 && isHelp(args[0])) {
		fmt.Fprint(s.Out, p.Usage)
		return 0
	}
	name, rest := "", args
	if len(args) > 0 {
		name, rest = args[0], args[1:]
	}
	if group := p.group(name); group != nil {
		if len(rest) == 0 || isHelp(rest[0]) {
			p.listGroup(s.Out, name, group)
			return 0
		}
		if strings.HasPrefix(rest[0], "-") {
			fmt.Fprintf(s.Err, "%s %s: missing subcommand\n", p.Name, name)
			p.listGroup(s.Err, name, group)
			return 2
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	cmd, ok := p.command(name)
	if !ok && p.Default != "" && (name == "" || strings.HasPrefix(name, "-")) {
		cmd, ok, rest = p.mustCommand(p.Default), true, args
	}
	if !ok {
		fmt.Fprintf(s.Err, "%s: unknown command %q\n\n%s", p.Name, name, p.Usage)
		return 2
	}
	return p.runCommand(ctx, cmd, rest, s)
}

func (p *Program) runCommand(ctx context.Context, cmd Command, args []string, s Stdio) int {
	full := p.Name + " " + cmd.Name
	fs := flag.NewFlagSet(full, flag.ContinueOnError)
	var flagOut bytes.Buffer
	fs.SetOutput(&flagOut)
	fs.Usage = func() {}
	run := cmd.Setup(fs)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		p.commandHelp(s.Out, cmd, fs)
		return 0
	case err != nil:
		fmt.Fprintf(s.Err, "%s: %v\nrun '%s --help' for usage\n", full, err, full)
		return 2
	case cmd.Args == "" && fs.NArg() > 0:
		fmt.Fprintf(s.Err, "%s: unexpected argument %q\n", full, fs.Arg(0))
		return 2
	}
	err = run(ctx, fs.Args(), s)
	var ue UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(s.Err, "%s: %v\n", full, err)
		return 2
	default:
		fmt.Fprintf(s.Err, "%s: %v\n", full, err)
		return 1
	}
}

func (p *Program) commandHelp(w io.Writer, cmd Command, fs *flag.FlagSet) {
	line := fmt.Sprintf("usage: %s %s [flags]", p.Name, cmd.Name)
	if cmd.Args != "" {
		line += " " + cmd.Args
	}
	fmt.Fprintf(w, "%s\n\n%s\n\nflags:\n", line, cmd.Summary)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// group returns the commands named "name X", or nil if name is no group.
func (p *Program) group(name string) []Command {
	var g []Command
	for _, c := range p.Commands {
		if strings.HasPrefix(c.Name, name+" ") {
			g = append(g, c)
		}
	}
	return g
}

func (p *Program) listGroup(w io.Writer, name string, group []Command) {
	fmt.Fprintf(w, "usage: %s %s <command> [flags]\n\ncommands:\n", p.Name, name)
	for _, c := range group {
		fmt.Fprintf(w, "  %-16s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nrun '%s %s <command> --help' for its flags\n", p.Name, name)
}

func (p *Program) command(name string) (Command, bool) {
	for _, c := range p.Commands {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

func (p *Program) mustCommand(name string) Command {
	c, ok := p.command(name)
	if !ok {
		panic("cli: default command " + name + " is not a command")
	}
	return c
}
