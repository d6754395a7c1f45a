"""The gateway's routers, one per resource; app.main includes each of them."""
