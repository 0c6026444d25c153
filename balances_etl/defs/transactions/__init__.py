"""The transactions domain: GET /v1/transactions synced day by day."""
