"""The browser pages (server-rendered, no script): sign-in, the dashboard of systems over time, share links."""
