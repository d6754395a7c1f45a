"""The browser side: sign-in sessions, share links, the dashboard, and a real Chromium driving them."""
