package federation

import (
	"html/template"
	"net/http"

	"github.com/meridian-id/meridian/loginpage"
)

// Page is the data of a login page; the fields are those of the region's
// templates.
type Page struct {
	Title, Region, Error      string
	ID, CSRF, State, Username string
	ClientName, Message       string
	Scopes                    []string
}

// Titles and messages the region's pages use.
const (
	// UnavailableMessage is what a user sees when the hub or their
	// resident region cannot be reached.
	UnavailableMessage = "Sign-in through your home region is temporarily unavailable. Please try again in a few minutes."
	TitlePassword      = "Enter your password"
	InvalidCredentials = "Invalid username or password."
	TooManyAttempts    = "Too many attempts. Wait a minute and try again."
)

// Pages renders the region-look-alike login pages.
type Pages struct{ t *template.Template }

// NewPages parses the region's own page templates: pages the hub and the
// Federator render where the user expects a region's page (the unknown-user
// password page above all) must be indistinguishable from the region's.
func NewPages() (*Pages, error) {
	t, err := template.ParseFS(loginpage.Templates(), "templates/*.html")
	if err != nil {
		return nil, err
	}
	return &Pages{t: t}, nil
}

// Render writes page name ("password", "username", "error") with status,
// with the headers a region sends with its pages.
func (p *Pages) Render(w http.ResponseWriter, status int, name string, pg Page) {
	loginpage.SetHeaders(w.Header())
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = p.t.ExecuteTemplate(w, name, pg)
}

// Error writes an HTML error page.
func (p *Pages) Error(w http.ResponseWriter, status int, region, msg string) {
	p.Render(w, status, "error", Page{Title: http.StatusText(status), Region: region, Message: msg})
}
