package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/cli"
	serving "github.com/meridian-id/meridian/internal/serve"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/telemetry"
)

const usage = `usage: regional <command> [flags]

commands:
  serve           run the regional node (public and admin listeners)
  migrate         apply database migrations and exit
  users add       create a user   (--username U [--password-stdin] [--claims JSON] [--totp])
  users list      list users
  users delete    delete a user   (--username U)
  users announce  mesh topology: write every user of the region into its own partition of
                  the lookup table (after an upgrade from the shared table; idempotent)
  passkeys list   list a user's passkeys (--username U); those flagged as possibly cloned sign nobody in
  passkeys remove remove a user's passkeys (--username U --passkey ID | --flagged)
  clients add     register a client (--redirect-uri U ... [--public] [--grant-types a,b]
                  [--access-token-format opaque|jwt] [--name N] [--first-party] [--scopes s,t] [--json])
  clients list    list clients
  clients delete  delete a client (--client-id ID)
  clients rotate-secret  give a client a new secret (--client-id ID [--overlap D] [--json]); the old
                  one keeps working for --overlap (default client_secret_overlap; 0 ends it now)
  keys rotate     create a new signing key, published now and signing after the publish delay;
                  the old one signs until then and stays published for --overlap after it
  keys list       list the published signing keys, when each signs and the KEK that seals it
  keys migrate    seal every signing key with the region's key-encryption key, in place
                  (plaintext keys, and keys sealed by previous_key_encryption_key_file)
  promote         make a site's database the writable one: pg_promote a standby and claim
                  the fencing generation ([--dr]); the other site fences itself on seeing it
  fence           mark a site's database superseded ([--dr] [--by-generation N] [--by-holder H]);
                  its nodes refuse to serve until it is rebuilt from the site that took over

common flags: --config F (default configs/regions.yaml) --region ID --data-dir D

secrets (key files of >= 32 bytes, mode 0600; every key also has its environment variable,
MERIDIAN_ + the key path in upper case, list entries by index: MERIDIAN_REGIONS_0_COOKIE_KEY_FILE):
  federation.routing_key_file (or federation.routing_keys)   identical on every node
  regions[].cookie_key_file          identical on every node of the region and its DR site;
                                     MERIDIAN_COOKIE_KEY_FILE overrides it for this node
  regions[].key_encryption_key_file  seals the signing keys; MERIDIAN_KEY_ENCRYPTION_KEY_FILE
  regions[].federation_key_file      the region's federation identity; MERIDIAN_FEDERATION_KEY_FILE
  regions[].registration_token_file  opens dynamic client registration
  hub.key_file                       k_hub
  previous_* variants of each during a rotation (docs/operations.md, "Key rotation")
without them development keys under data_dir/secrets are used (and created), with a warning;
federation.production: true (MERIDIAN_FEDERATION_PRODUCTION=true) refuses that, key files
readable by group or others, and plain HTTP.
`

// env is what a command runs with.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	cfg    *config.Config
	region string
	data   string
	tel    *telemetry.Telemetry
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return program.Run(ctx, args, cli.Stdio{In: stdin, Out: stdout, Err: stderr})
}

var program = &cli.Program{Name: "regional", Usage: usage, Commands: []cli.Command{
	withEnv("serve", "run the regional node (public and admin listeners)", nil, serve),
	withEnv("migrate", "apply database migrations and exit", nil, migrate),
	withEnv("users add", "create a user", usersAddFlags, usersAdd),
	withEnv("users list", "list users", nil, usersList),
	withEnv("users delete", "delete a user", usersDeleteFlags, usersDelete),
	withEnv("users announce", "mesh topology: write every user into this region's lookup partition", func(fs *flag.FlagSet, fv *flagValues) {
		fs.StringVar(&fv.prefix, "prefix", "meridian:", "key prefix in Redis (the partition is <prefix>lookup:<region>:)")
	}, usersAnnounce),
	withEnv("passkeys list", "list a user's passkeys", usersDeleteFlags, usersPasskeys),
	withEnv("passkeys remove", "remove a user's passkey, or every flagged one", passkeysRemoveFlags, passkeysRemove),
	withEnv("clients add", "register a client", clientsAddFlags, clientsAdd),
	withEnv("clients list", "list clients", jsonFlag, clientsList),
	withEnv("clients delete", "delete a client", clientsDeleteFlags, clientsDelete),
	withEnv("clients rotate-secret", "give a client a new secret; the old one works for the overlap", clientsRotateFlags, clientsRotate),
	withEnv("keys rotate", "create a new signing key, signing after the publish delay", keysRotateFlags, keysRotate),
	withEnv("keys list", "list the published signing keys and the KEK that seals each", nil, keysList),
	withEnv("keys migrate", "seal every signing key with the region's key-encryption key", nil, keysMigrate),
	withEnv("promote", "make a site's database the writable one", drFlag, promote),
	withEnv("fence", "mark a site's database superseded", fenceFlags, fence),
}}

// flagValues holds every command-specific flag; each command reads its own.
type flagValues struct {
	username, claims, clientID, name, format, grants, scopes string
	passwordStdin, public, asJSON, firstParty, withTOTP, dr  bool
	redirects, postLogout                                    multi
	overlap                                                  time.Duration
	byGeneration                                             int64
	byHolder                                                 string
	passkey                                                  string
	prefix                                                   string
	flagged                                                  bool
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func withEnv(name, summary string, extra func(*flag.FlagSet, *flagValues), body func(*env, *flagValues) error) cli.Command {
	return cli.Command{Name: name, Summary: summary, Setup: func(fs *flag.FlagSet) cli.RunFunc {
		cfgPath := fs.String("config", "configs/regions.yaml", "federation config file")
		regionID := fs.String("region", "", "region id (required)")
		dataDir := fs.String("data-dir", "", "data directory (default: data_dir from the config)")
		fv := &flagValues{}
		if name == "serve" {
			fs.BoolVar(&fv.dr, "dr", false, "run the region's DR site instead of the primary")
		}
		if extra != nil {
			extra(fs, fv)
		}
		return func(ctx context.Context, _ []string, s cli.Stdio) error {
			stdin, stdout, stderr := s.In, s.Out, s.Err
			if *regionID == "" {
				return cli.Usagef("--region is required")
			}
			cfg, err := config.Load(*cfgPath)
			if err != nil {
				return err
			}
			if _, ok := cfg.Region(*regionID); !ok {
				return cli.Usagef("--region: %q is not configured (have %s)", *regionID, strings.Join(cfg.RegionIDs(), ", "))
			}
			data := *dataDir
			if data == "" {
				data = cfg.DataDir
			}
			logOut := io.Discard
			if name == "serve" || name == "migrate" {
				logOut = stderr
			}
			tel, err := telemetry.New(ctx, telemetry.Config{Service: "meridian-regional", Instance: *regionID,
				OTLPEndpoint: cfg.Telemetry.OTLPEndpoint, LogLevel: cfg.Telemetry.LogLevel}, logOut)
			if err != nil {
				return err
			}
			defer tel.Shutdown(context.Background())
			return body(&env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, cfg: cfg, region: *regionID, data: data, tel: tel}, fv)
		}
	}}
}

// audit records an admin change as one JSON audit line on stderr (the
// commands' own log is discarded; the audit trail is not).
func (e *env) audit(action string, attrs ...slog.Attr) {
	region.RecordAdminChange(e.ctx, slog.New(slog.NewJSONHandler(e.stderr, nil)), e.region, action, attrs...)
}

func (e *env) openStore() (store.Store, error) {
	r, _ := e.cfg.Region(e.region)
	return node.OpenStore(e.ctx, r, e.data)
}

// openClients opens the region's store and the routing codec for the
// client-management commands; the caller closes the store with the
// returned function.
func (e *env) openClients() (*region.Clients, func(), error) {
	st, err := e.openStore()
	if err != nil {
		return nil, nil, err
	}
	codec, err := node.Codec(e.cfg, e.data, e.tel.Log)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return &region.Clients{Store: st, Codec: codec, Region: e.region}, func() { st.Close() }, nil
}

func serve(e *env, fv *flagValues) error {
	serving.TuneGC(os.LookupEnv) // the process's GC target (docs/operations.md)
	n, err := node.New(e.ctx, e.cfg, e.region, node.Options{DataDir: e.data, DR: fv.dr}, e.tel)
	if err != nil {
		return err
	}
	defer n.Close()
	defer e.tel.AsDefault()() // op logs request errors only to slog's default
	return n.Serve(e.ctx)
}

func drFlag(fs *flag.FlagSet, fv *flagValues) {
	fs.BoolVar(&fv.dr, "dr", false, "act on the region's DR site (regions[i].dr.database) instead of the primary")
}

func fenceFlags(fs *flag.FlagSet, fv *flagValues) {
	drFlag(fs, fv)
	fs.Int64Var(&fv.byGeneration, "by-generation", 0, "the generation that supersedes this site (default: one above its own)")
	fs.StringVar(&fv.byHolder, "by-holder", "", "the site that holds it (default: operator)")
}

// promote runs step 2 of the failover runbook (docs/operations.md).
func promote(e *env, fv *flagValues) error {
	r, _ := e.cfg.Region(e.region)
	g, err := node.Promote(e.ctx, r, fv.dr, e.data)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "region %s: %s holds generation %d\n", e.region, g.Holder, g.Number)
	return nil
}

// fence marks a returning old primary's database superseded (runbook).
func fence(e *env, fv *flagValues) error {
	r, _ := e.cfg.Region(e.region)
	g, err := node.Fence(e.ctx, r, fv.dr, e.data, fv.byGeneration, fv.byHolder)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "region %s: database of generation %d (%s) fenced by generation %d (%s)\n",
		e.region, g.Number, g.Holder, g.FencedBy, g.FencedHolder)
	return nil
}

func migrate(e *env, _ *flagValues) error {
	st, err := e.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(e.stdout, "region %s: database migrated\n", e.region)
	return nil
}

func usersAddFlags(fs *flag.FlagSet, fv *flagValues) {
	fs.StringVar(&fv.username, "username", "", "username (required)")
	fs.BoolVar(&fv.passwordStdin, "password-stdin", false, "read the password from the first line of stdin")
	fs.StringVar(&fv.claims, "claims", "", `profile claims as a JSON object of strings, e.g. {"name":"Ada","email":"ada@example.com"}`)
	fs.BoolVar(&fv.withTOTP, "totp", false, "enroll TOTP and print the otpauth:// URI")
	fs.BoolVar(&fv.asJSON, "json", false, "print the result as JSON")
}

func usersAdd(e *env, fv *flagValues) error {
	if fv.username == "" {
		return cli.Usagef("--username is required")
	}
	if !fv.passwordStdin {
		return cli.Usagef("--password-stdin is required (passwords are never taken from the command line)")
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	password := strings.TrimRight(line, "\r\n")
	spec := region.UserSpec{Username: fv.username, Password: password}
	if fv.claims != "" {
		if err := json.Unmarshal([]byte(fv.claims), &spec.Claims); err != nil {
			return cli.Usagef("--claims must be a JSON object of string values: %v", err)
		}
	}
	var otpURI string
	if fv.withTOTP {
		key, err := totp.Generate(totp.GenerateOpts{Issuer: "Meridian " + e.region, AccountName: fv.username})
		if err != nil {
			return err
		}
		spec.TOTPSecret, otpURI = key.Secret(), key.URL()
	}
	st, err := e.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	u, err := region.CreateUser(e.ctx, st, spec)
	if errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("user %q already exists in region %s", fv.username, e.region)
	}
	if err != nil {
		return err
	}
	e.audit("user.created", slog.String("sub", u.ID), slog.Bool("totp", otpURI != ""))
	if fv.asJSON {
		return json.NewEncoder(e.stdout).Encode(map[string]string{"sub": u.ID, "username": u.Username, "region": e.region, "totp_uri": otpURI})
	}
	fmt.Fprintf(e.stdout, "created user %s (sub %s) in region %s\n", u.Username, u.ID, e.region)
	if otpURI != "" {
		fmt.Fprintf(e.stdout, "TOTP: %s\n", otpURI)
	}
	return nil
}

func usersList(e *env, _ *flagValues) error {
	st, err := e.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tSUB\tTOTP\tCREATED")
	after := ""
	for {
		users, err := st.ListUsers(e.ctx, after, 500)
		if err != nil {
			return err
		}
		for _, u := range users {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", u.Username, u.ID, u.TOTPSecret != "", u.CreatedAt.Format(time.RFC3339))
		}
		if len(users) < 500 {
			break
		}
		after = users[len(users)-1].Username
	}
	return tw.Flush()
}

func usersDeleteFlags(fs *flag.FlagSet, fv *flagValues) {
	fs.StringVar(&fv.username, "username", "", "username (required)")
}

func usersDelete(e *env, fv *flagValues) error {
	name, err := region.NormalizeUsername(fv.username)
	if err != nil {
		return cli.Usagef("--username: %v", err)
	}
	st, err := e.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.DeleteUser(e.ctx, name); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no user %q in region %s", fv.username, e.region)
	} else if err != nil {
		return err
	}
	e.audit("user.deleted", slog.String("username", name))
	fmt.Fprintf(e.stdout, "deleted user %s from region %s\n", name, e.region)
	return nil
}

// userPasskeys opens the store and returns it with the user's passkeys.
func userPasskeys(e *env, username string) (store.Store, store.User, []store.WebAuthnCredential, error) {
	name, err := region.NormalizeUsername(username)
	if err != nil {
		return nil, store.User{}, nil, cli.Usagef("--username: %v", err)
	}
	st, err := e.openStore()
	if err != nil {
		return nil, store.User{}, nil, err
	}
	u, err := st.GetUserByUsername(e.ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		err = fmt.Errorf("no user %q in region %s", username, e.region)
	}
	var creds []store.WebAuthnCredential
	if err == nil {
		creds, err = st.ListWebAuthnCredentials(e.ctx, u.ID)
	}
	if err != nil {
		st.Close()
		return nil, store.User{}, nil, err
	}
	return st, u, creds, nil
}

func usersPasskeys(e *env, fv *flagValues) error {
	st, _, creds, err := userPasskeys(e, fv.username)
	if err != nil {
		return err
	}
	defer st.Close()
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tCREATED\tLAST USED\tSTATE")
	for _, c := range creds {
		state, used := "ok", "-"
		if c.CloneWarning {
			state = "flagged: possibly cloned"
		}
		if !c.LastUsedAt.IsZero() {
			used = c.LastUsedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", base64.RawURLEncoding.EncodeToString(c.ID), c.Name, c.CreatedAt.Format(time.RFC3339), used, state)
	}
	return tw.Flush()
}

func passkeysRemoveFlags(fs *flag.FlagSet, fv *flagValues) {
	fs.StringVar(&fv.username, "username", "", "username (required)")
	fs.StringVar(&fv.passkey, "passkey", "", "passkey id, as listed by passkeys list")
	fs.BoolVar(&fv.flagged, "flagged", false, "remove every passkey flagged as possibly cloned")
}

func passkeysRemove(e *env, fv *flagValues) error {
	if (fv.passkey == "") == !fv.flagged {
		return cli.Usagef("give --passkey ID or --flagged")
	}
	st, u, creds, err := userPasskeys(e, fv.username)
	if err != nil {
		return err
	}
	defer st.Close()
	removed := 0
	for _, c := range creds {
		if (fv.flagged && c.CloneWarning) || base64.RawURLEncoding.EncodeToString(c.ID) == fv.passkey {
			if err := st.DeleteWebAuthnCredential(e.ctx, u.ID, c.ID); err != nil {
				return err
			}
			e.audit("passkey.removed", slog.String("sub", u.ID), slog.Bool("flagged", c.CloneWarning))
			removed++
		}
	}
	if removed == 0 && !fv.flagged {
		return fmt.Errorf("user %s has no passkey %q", u.Username, fv.passkey)
	}
	fmt.Fprintf(e.stdout, "removed %d passkey(s) of %s\n", removed, u.Username)
	return nil
}

func clientsAddFlags(fs *flag.FlagSet, fv *flagValues) {
	fs.Var(&fv.redirects, "redirect-uri", "exact redirect URI (repeatable)")
	fs.Var(&fv.postLogout, "post-logout-redirect-uri", "post-logout redirect URI (repeatable)")
	fs.BoolVar(&fv.public, "public", false, "public client (no secret; PKCE required)")
	fs.StringVar(&fv.grants, "grant-types", "", "comma-separated: authorization_code,refresh_token,client_credentials")
	fs.StringVar(&fv.format, "access-token-format", "opaque", "opaque or jwt")
	fs.StringVar(&fv.name, "name", "", "display name shown on the consent screen")
	fs.BoolVar(&fv.firstParty, "first-party", false, "first-party application: no consent screen")
	fs.StringVar(&fv.scopes, "scopes", "", "comma-separated extra scopes (client_credentials scopes, meridian:introspect)")
	fs.BoolVar(&fv.asJSON, "json", false, "print the client as JSON (client_id, client_secret)")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func clientsAdd(e *env, fv *flagValues) error {
	m, closeStore, err := e.openClients()
	if err != nil {
		return err
	}
	defer closeStore()
	c, err := m.Create(e.ctx, region.ClientSpec{
		Name: fv.name, RedirectURIs: fv.redirects, PostLogoutRedirectURIs: fv.postLogout, Public: fv.public,
		GrantTypes: splitList(fv.grants), AccessTokenFormat: fv.format, FirstParty: fv.firstParty, Scopes: splitList(fv.scopes),
	})
	if errors.Is(err, region.ErrInvalidClientMetadata) || errors.Is(err, region.ErrInvalidRedirectURI) {
		return cli.Usagef("%v", err)
	}
	if err != nil {
		return err
	}
	e.audit("client.created", slog.String("client_id", c.ID), slog.String("token_endpoint_auth_method", c.AuthMethod),
		slog.Any("scopes", c.Scopes))
	if fv.asJSON {
		return json.NewEncoder(e.stdout).Encode(clientJSON(c.Client, c.Secret))
	}
	fmt.Fprintf(e.stdout, "client_id:     %s\n", c.ID)
	if c.Secret != "" {
		fmt.Fprintf(e.stdout, "client_secret: %s   (shown once; only its hash is stored)\n", c.Secret)
	}
	return nil
}

func clientJSON(c store.Client, secret string) map[string]any {
	m := map[string]any{
		"client_id": c.ID, "redirect_uris": c.RedirectURIs, "grant_types": c.GrantTypes,
		"token_endpoint_auth_method": c.AuthMethod, "access_token_format": c.AccessTokenFormat,
		"first_party": c.FirstParty, "name": c.Name, "scopes": c.Scopes,
	}
	if secret != "" {
		m["client_secret"] = secret
	}
	return m
}

func jsonFlag(fs *flag.FlagSet, fv *flagValues) {
	fs.BoolVar(&fv.asJSON, "json", false, "print JSON")
}

func clientsList(e *env, fv *flagValues) error {
	st, err := e.openStore()
	if err != nil {
		return err
	}
	defer st.Close()
	cs, err := (&region.Clients{Store: st, Region: e.region}).List(e.ctx)
	if err != nil {
		return err
	}
	if fv.asJSON {
		out := make([]map[string]any, 0, len(cs))
		for _, c := range cs {
			out = append(out, clientJSON(c, ""))
		}
		return json.NewEncoder(e.stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT_ID\tNAME\tAUTH\tFORMAT\tREDIRECT_URIS")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.ID, c.Name, c.AuthMethod, c.AccessTokenFormat, strings.Join(c.RedirectURIs, " "))
	}
	return tw.Flush()
}

func clientsDeleteFlags(fs *flag.FlagSet, fv *flagValues) {
	fs.StringVar(&fv.clientID, "client-id", "", "client id (required)")
}

func clientsDelete(e *env, fv *flagValues) error {
	if fv.clientID == "" {
		return cli.Usagef("--client-id is required")
	}
	m, closeStore, err := e.openClients()
	if err != nil {
		return err
	}
	defer closeStore()
	if err := m.Delete(e.ctx, fv.clientID); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no client %q in region %s", fv.clientID, e.region)
	} else if err != nil {
		return err
	}
	e.audit("client.deleted", slog.String("client_id", fv.clientID))
	fmt.Fprintf(e.stdout, "deleted client %s\n", fv.clientID)
	return nil
}

func clientsRotateFlags(fs *flag.FlagSet, fv *flagValues) {
	fs.StringVar(&fv.clientID, "client-id", "", "client id (required)")
	fs.DurationVar(&fv.overlap, "overlap", -1, "how long the current secret keeps working (default the region's client_secret_overlap; 0 ends it now)")
	fs.BoolVar(&fv.asJSON, "json", false, "print the client as JSON (client_id, client_secret)")
}

// clientsRotate gives a client a new secret through the same service as
// the admin API's POST /admin/clients/{id}/secret.
func clientsRotate(e *env, fv *flagValues) error {
	if fv.clientID == "" {
		return cli.Usagef("--client-id is required")
	}
	r, _ := e.cfg.Region(e.region)
	limit := cmp.Or(r.ClientSecretMaxOverlap, region.DefaultMaxSecretOverlap)
	overlap := fv.overlap
	if overlap < 0 {
		overlap = min(cmp.Or(r.ClientSecretOverlap, region.DefaultSecretOverlap), limit)
	}
	m, closeStore, err := e.openClients()
	if err != nil {
		return err
	}
	defer closeStore()
	m.MaxOverlap = limit
	c, err := m.RotateSecret(e.ctx, fv.clientID, overlap)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("no client %q in region %s", fv.clientID, e.region)
	case errors.Is(err, region.ErrNoSecret), errors.Is(err, region.ErrOverlapTooLong):
		return cli.Usagef("%v", err)
	case err != nil:
		return err
	}
	e.audit("client.secret_rotated", slog.String("client_id", c.ID), slog.Duration("overlap", overlap))
	if fv.asJSON {
		m := clientJSON(c.Client, c.Secret)
		if !c.PreviousSecretExpiresAt.IsZero() {
			m["previous_secret_expires_at"] = c.PreviousSecretExpiresAt.Unix()
		}
		return json.NewEncoder(e.stdout).Encode(m)
	}
	fmt.Fprintf(e.stdout, "client_id:     %s\n", c.ID)
	fmt.Fprintf(e.stdout, "client_secret: %s   (shown once; only its hash is stored)\n", c.Secret)
	if c.PreviousSecretExpiresAt.IsZero() {
		fmt.Fprintln(e.stdout, "the previous secret no longer works")
	} else {
		fmt.Fprintf(e.stdout, "the previous secret works until %s\n", c.PreviousSecretExpiresAt.Format(time.RFC3339))
	}
	return nil
}

func keysRotateFlags(fs *flag.FlagSet, fv *flagValues) {
	fs.DurationVar(&fv.overlap, "overlap", 0, "how long the previous key stays published after it stops signing "+
		"(default federation.signing_key_overlap; refused when shorter than the ID / access token lifetime)")
}

// keys opens the region's store and its key manager with the node's KEK.
func (e *env) keys() (*region.Keys, store.Store, error) {
	st, err := e.openStore()
	if err != nil {
		return nil, nil, err
	}
	r, _ := e.cfg.Region(e.region)
	opts, err := node.KeyOptions(e.cfg, r, e.data, e.tel.Log)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	opts.MinOverlap = max(region.DefaultLifetimes.IDToken, region.DefaultLifetimes.AccessToken)
	k, err := region.NewKeys(e.region, st, opts)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return k, st, nil
}

func keysRotate(e *env, fv *flagValues) error {
	overlap := fv.overlap
	if overlap == 0 {
		overlap = e.cfg.Federation.SigningKeyOverlap
	}
	if overlap == 0 {
		overlap = 24 * time.Hour
	}
	k, st, err := e.keys()
	if err != nil {
		return err
	}
	defer st.Close()
	id, signsAt, err := k.Rotate(e.ctx, overlap)
	if err != nil {
		return err
	}
	e.audit("signing_key.rotated", slog.String("kid", id))
	fmt.Fprintf(e.stdout, "region %s: new signing key %s published; it signs from %s, the previous key is published until %s\n",
		e.region, id, signsAt.Format(time.RFC3339), signsAt.Add(overlap).Format(time.RFC3339))
	return nil
}

func keysList(e *env, _ *flagValues) error {
	k, st, err := e.keys()
	if err != nil {
		return err
	}
	defer st.Close()
	infos, err := k.List(e.ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATE\tSIGNS FROM\tPUBLISHED UNTIL\tSEALED BY")
	for _, i := range infos {
		until := "-"
		if !i.NotAfter.IsZero() {
			until = i.NotAfter.Format(time.RFC3339)
		}
		kek := i.KEKID
		if kek == "" {
			kek = "PLAINTEXT (run keys migrate)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.ID, i.State, i.NotBefore.Format(time.RFC3339), until, kek)
	}
	return tw.Flush()
}

func keysMigrate(e *env, _ *flagValues) error {
	k, st, err := e.keys()
	if err != nil {
		return err
	}
	defer st.Close()
	n, err := k.Migrate(e.ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "region %s: %d signing key(s) sealed with the current key-encryption key\n", e.region, n)
	return nil
}
