#!/bin/sh
# A "legacy" nightly report: a hard-coded connection string, no idea that
# tollgate exists. Not one line of it changes to be governed.
psql -X -h 127.77.0.5 -p 5432 -U report -d orders \
  -c "SELECT current_user AS logged_in_as, inet_server_addr() AS server;" \
  -c "SELECT id, name, email FROM customers ORDER BY id;"
# ...and, as legacy scripts do, it also tidies up after itself.
psql -X -h 127.77.0.5 -p 5432 -U report -d orders -c "DELETE FROM customers WHERE id = 2;"
