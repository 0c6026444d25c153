"""balances-etl: an exact, reconciled daily history of NOAH crypto balances."""
