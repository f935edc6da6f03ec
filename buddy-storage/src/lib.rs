//! SQLite and Postgres session storage for buddy.
