#!/usr/bin/python3
"""A psycopg2 client for tollgate's end-to-end tests.

Usage: psycopg2_client.py DSN
Runs a fixed script (simple query, parameters, a transaction, a server-side
cursor, an error) and prints one JSON object with what it saw.
"""
import json
import sys

import psycopg2


def main():
    out = {}
    conn = psycopg2.connect(sys.argv[1])
    cur = conn.cursor()
    cur.execute("SELECT 1 + 1")
    out["sum"] = cur.fetchone()[0]
    cur.execute("SELECT %s::text || %s::text", ("tol", "lgate"))
    out["concat"] = cur.fetchone()[0]
    cur.execute("CREATE TEMP TABLE t (id int, v text)")
    cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, "v%d" % i) for i in range(100)])
    conn.commit()
    named = conn.cursor(name="big")
    named.itersize = 7
    named.execute("SELECT id FROM t ORDER BY id")
    out["rows"] = sum(1 for _ in named)
    named.close()
    try:
        cur.execute("SELECT * FROM no_such_table")
    except psycopg2.Error as e:
        out["error_sqlstate"] = e.pgcode
        conn.rollback()
    cur.execute("SHOW application_name")
    out["application_name"] = cur.fetchone()[0]
    conn.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
