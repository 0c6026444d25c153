"""The balances domain: NOAH's balances, one snapshot per UTC day."""
