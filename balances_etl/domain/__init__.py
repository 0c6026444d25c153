"""What the pipeline is about: NOAH amounts, the balance snapshot schema, names, and when a day may be snapshotted."""
