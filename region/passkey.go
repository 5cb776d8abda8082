package region

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/meridian-id/meridian/region/store"
)

// PasskeyOptions configure the WebAuthn relying party.
type PasskeyOptions struct {
	// RPID is the relying party id: a registrable parent of every host the
	// login and /account pages are served on (the global host and every
	// region host), so that a passkey registered at the home region works
	// wherever its pages appear. Empty: the global issuer's host.
	RPID string
	// RPName is what authenticators show; empty: "Meridian".
	RPName string
	// Origins may run ceremonies; empty: the global issuer and this
	// region's issuer.
	Origins []string
	// Attestation is the conveyance preference: none (default), indirect
	// or direct. Attestation statements are not verified against a
	// metadata service: passkeys are accepted from any authenticator.
	Attestation string
}

// passkeys is the WebAuthn relying party of a region.
type passkeys struct {
	wa          *webauthn.WebAuthn
	attestation protocol.ConveyancePreference
}

func newPasskeys(cfg Config) (*passkeys, error) {
	o := cfg.Passkeys
	if o.RPID == "" {
		u, err := url.Parse(cfg.GlobalIssuer)
		if err != nil {
			return nil, err
		}
		o.RPID = u.Hostname()
		if net.ParseIP(o.RPID) != nil {
			// WebAuthn has no relying party on an IP address: passkeys
			// are off (a test listener, or a deployment without names).
			return nil, nil
		}
	}
	if o.RPName == "" {
		o.RPName = "Meridian"
	}
	if len(o.Origins) == 0 {
		o.Origins = []string{cfg.GlobalIssuer, cfg.Issuer}
	}
	pref := protocol.PreferNoAttestation
	switch o.Attestation {
	case "", "none":
	case "indirect":
		pref = protocol.PreferIndirectAttestation
	case "direct":
		pref = protocol.PreferDirectAttestation
	default:
		return nil, fmt.Errorf("%w: passkey attestation %q", ErrConfig, o.Attestation)
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID: o.RPID, RPDisplayName: o.RPName, RPOrigins: o.Origins, AttestationPreference: pref,
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Enforce: true, Timeout: 5 * time.Minute, TimeoutUVD: 5 * time.Minute},
			Registration: webauthn.TimeoutConfig{Enforce: true, Timeout: 5 * time.Minute, TimeoutUVD: 5 * time.Minute},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: passkeys: %v", ErrConfig, err)
	}
	return &passkeys{wa: wa, attestation: pref}, nil
}

// passkeyUser is a resident user as the WebAuthn library sees them. The
// user handle is the subject id: opaque, stable, never reused, no PII.
type passkeyUser struct {
	u     store.User
	creds []webauthn.Credential
}

func (p passkeyUser) WebAuthnID() []byte                         { return []byte(p.u.ID) }
func (p passkeyUser) WebAuthnName() string                       { return p.u.Username }
func (p passkeyUser) WebAuthnCredentials() []webauthn.Credential { return p.creds }
func (p passkeyUser) WebAuthnDisplayName() string {
	if n := p.u.Claims["name"]; n != "" {
		return n
	}
	return p.u.Username
}

// loadPasskeyUser reads a user and their usable credentials (a credential
// flagged as cloned is left out: it signs nobody in until replaced).
func loadPasskeyUser(ctx context.Context, st store.Store, u store.User) (passkeyUser, error) {
	rows, err := st.ListWebAuthnCredentials(ctx, u.ID)
	if err != nil {
		return passkeyUser{}, err
	}
	pu := passkeyUser{u: u}
	for _, row := range rows {
		if row.CloneWarning {
			continue
		}
		var c webauthn.Credential
		if err := json.Unmarshal(row.Data, &c); err != nil {
			return passkeyUser{}, fmt.Errorf("region: credential record: %w", err)
		}
		c.Authenticator.SignCount = row.SignCount
		pu.creds = append(pu.creds, c)
	}
	return pu, nil
}

// encodeCeremony and decodeCeremony carry a ceremony's session data in a
// sealed login state or account form.
func encodeCeremony(sd *webauthn.SessionData) (string, error) {
	b, err := json.Marshal(sd)
	return string(b), err
}

func decodeCeremony(s string) (webauthn.SessionData, error) {
	var sd webauthn.SessionData
	err := json.Unmarshal([]byte(s), &sd)
	return sd, err
}

// options renders ceremony options for the page's script.
func options(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// beginLogin starts an assertion: discoverable (first factor, user
// verification required, no credential list, so the page reveals nothing
// about the account) when pu is nil, else for pu's credentials (second
// factor, user verification preferred).
func (pk *passkeys) beginLogin(pu *passkeyUser) (string, string, error) {
	if pk == nil {
		return "", "", errPasskeysOff
	}
	var (
		a   *protocol.CredentialAssertion
		sd  *webauthn.SessionData
		err error
	)
	if pu == nil {
		a, sd, err = pk.wa.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	} else {
		a, sd, err = pk.wa.BeginLogin(*pu, webauthn.WithUserVerification(protocol.VerificationPreferred))
	}
	if err != nil {
		return "", "", err
	}
	cer, err := encodeCeremony(sd)
	return options(a), cer, err
}

// errPasskey is every assertion or attestation the relying party refuses;
// the user sees one message whatever the reason.
var errPasskey = errors.New("region: passkey refused")

// errPasskeysOff: no relying party id (the global host is an IP address).
var errPasskeysOff = errors.New("region: passkeys are not configured")

// passkeyResult is a verified assertion.
type passkeyResult struct {
	user passkeyUser
	cred *webauthn.Credential
	amr  []string // RFC 8176: hwk or swk, user, mfa when the user was verified
}

// finishLogin verifies an assertion (JSON from the browser) against the
// ceremony. want is the user the login is for (the password step's user,
// or the user named on the page); the credential must be theirs. The
// signature counter is recorded region-wide: a counter that does not rise
// flags the credential as cloned and fails the login.
func (pk *passkeys) finishLogin(ctx context.Context, st store.Store, want func(store.User) bool, ceremony, assertion string) (passkeyResult, string, error) {
	if pk == nil {
		return passkeyResult{}, "", errPasskeysOff
	}
	sd, err := decodeCeremony(ceremony)
	if err != nil {
		return passkeyResult{}, "bad_state", errPasskey
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes([]byte(assertion))
	if err != nil {
		return passkeyResult{}, "malformed", errPasskey
	}
	var (
		pu       passkeyUser
		refusal  string // why the credential's owner was refused
		storeErr error
	)
	lookup := func(handle []byte) (passkeyUser, error) {
		u, err := st.GetUserByID(ctx, string(handle))
		if err != nil {
			refusal = "unknown_credential"
			if !errors.Is(err, store.ErrNotFound) {
				storeErr = err
			}
			return passkeyUser{}, err
		}
		if !want(u) {
			refusal = "other_user"
			return passkeyUser{}, errors.New("region: credential of another user")
		}
		p, err := loadPasskeyUser(ctx, st, u)
		if err != nil {
			refusal, storeErr = "unknown_credential", err
			return passkeyUser{}, err
		}
		if !slices.ContainsFunc(p.creds, func(c webauthn.Credential) bool { return bytes.Equal(c.ID, parsed.RawID) }) {
			// Removed, flagged as cloned, or never registered here.
			refusal = "unknown_credential"
			return passkeyUser{}, errors.New("region: unknown credential")
		}
		return p, nil
	}
	var cred *webauthn.Credential
	if len(sd.UserID) == 0 {
		_, cred, err = pk.wa.ValidatePasskeyLogin(func(_, handle []byte) (webauthn.User, error) {
			var lerr error
			pu, lerr = lookup(handle)
			return pu, lerr
		}, sd, parsed)
	} else if pu, err = lookup(sd.UserID); err == nil {
		cred, err = pk.wa.ValidateLogin(pu, sd, parsed)
	}
	switch {
	case storeErr != nil:
		return passkeyResult{}, "", storeErr
	case err != nil && refusal != "":
		return passkeyResult{}, refusal, errPasskey
	case err != nil:
		return passkeyResult{}, "invalid_assertion", errPasskey
	}
	if cred.Authenticator.CloneWarning {
		// The library saw the counter go back; record it.
		_ = st.UseWebAuthnCredential(ctx, cred.ID, parsed.Response.AuthenticatorData.Counter, time.Now())
		return passkeyResult{}, "cloned_credential", errPasskey
	}
	if err := st.UseWebAuthnCredential(ctx, cred.ID, parsed.Response.AuthenticatorData.Counter, time.Now()); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return passkeyResult{}, "cloned_credential", errPasskey
		}
		return passkeyResult{}, "", err
	}
	amr := []string{"hwk"}
	if cred.Flags.BackupEligible {
		// A synced passkey's key leaves the device: software-secured.
		amr = []string{"swk"}
	}
	if parsed.Response.AuthenticatorData.Flags.UserPresent() {
		amr = append(amr, "user")
	}
	if parsed.Response.AuthenticatorData.Flags.UserVerified() {
		amr = append(amr, "mfa")
	}
	return passkeyResult{user: pu, cred: cred, amr: amr}, "", nil
}

// beginRegistration starts registering a passkey for pu: a discoverable
// credential (so it can sign in without a username), user verification
// preferred, the user's existing credentials excluded.
func (pk *passkeys) beginRegistration(pu passkeyUser) (string, string, error) {
	if pk == nil {
		return "", "", errPasskeysOff
	}
	var exclude []protocol.CredentialDescriptor
	for _, c := range pu.creds {
		exclude = append(exclude, c.Descriptor())
	}
	cc, sd, err := pk.wa.BeginRegistration(pu,
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired),
		webauthn.WithExclusions(exclude),
		webauthn.WithConveyancePreference(pk.attestation),
	)
	if err != nil {
		return "", "", err
	}
	cer, err := encodeCeremony(sd)
	return options(cc), cer, err
}

// finishRegistration verifies an attestation and returns the credential
// record to store.
func (pk *passkeys) finishRegistration(pu passkeyUser, ceremony, attestation, name string) (store.WebAuthnCredential, error) {
	if pk == nil {
		return store.WebAuthnCredential{}, errPasskeysOff
	}
	sd, err := decodeCeremony(ceremony)
	if err != nil {
		return store.WebAuthnCredential{}, errPasskey
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes([]byte(attestation))
	if err != nil {
		return store.WebAuthnCredential{}, errPasskey
	}
	cred, err := pk.wa.CreateCredential(pu, sd, parsed)
	if err != nil {
		return store.WebAuthnCredential{}, errPasskey
	}
	data, err := json.Marshal(cred)
	if err != nil {
		return store.WebAuthnCredential{}, err
	}
	return store.WebAuthnCredential{ID: cred.ID, UserID: pu.u.ID, Name: name, Data: data, SignCount: cred.Authenticator.SignCount,
		CreatedAt: time.Now().UTC()}, nil
}

// secondFactor reports whether amr holds a verified second factor (a TOTP
// code or a passkey).
func secondFactor(amr []string) bool {
	return slices.Contains(amr, "otp") || slices.Contains(amr, "hwk") || slices.Contains(amr, "swk")
}
