"""PostgreSQL access: the pool, migrations, and one small query module per table group."""
