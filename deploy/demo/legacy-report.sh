#!/bin/sh
# A "legacy" nightly report: a hard-coded connection string, no idea that
# tollgate exists. Not one line of it changes to be governed.
psql -X -h 127.77.0.5 -p 5432 -U report -d orders \
  -c "SELECT current_user AS logged_in_as, inet_server_addr() AS server;" \
  -c "SELECT id, name, email, card FROM customers ORDER BY id;"
# The nightly fix-up it has always done...
psql -X -h 127.77.0.5 -p 5432 -U report -d orders -c "UPDATE customers SET name = 'Alan M. Turing' WHERE id = 2;"
# ...and, as legacy scripts do, it also tidies up after itself.
psql -X -h 127.77.0.5 -p 5432 -U report -d orders -c "DELETE FROM customers WHERE id = 2;"
