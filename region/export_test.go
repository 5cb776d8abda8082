package region

// SetPasswordMemoryBudget replaces the argon2id memory budget of p's login
// (tests only; call before serving).
func SetPasswordMemoryBudget(p *Provider, bytes int64) { p.login.argon = newMemoryBudget(bytes) }
