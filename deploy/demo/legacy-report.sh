#!/bin/sh
# A "legacy" nightly report: a hard-coded connection string, no idea that
# tollgate exists. Not one line of it changes to be governed.
psql -X -h 127.77.0.5 -p 5432 -U "${DEMO_DB_USER:-postgres}" -d orders -c \
  "SELECT id, name, email FROM customers ORDER BY id;"
