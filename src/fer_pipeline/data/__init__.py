"""Tables and images without torch or Kedro: the schema, decoding and hashing, Parquet
shards, near-duplicate search, complete versions, and where per-shard work runs."""
