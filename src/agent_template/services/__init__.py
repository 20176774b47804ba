"""Services: model providers and their manager, tools, sessions."""
