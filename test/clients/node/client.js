// A node-postgres client for tollgate's end-to-end tests.
// Usage: node client.js DSN — prints one JSON object with what it saw.
const { Client } = require('pg');

async function main() {
  const out = {};
  const c = new Client({ connectionString: process.argv[2] });
  await c.connect();
  out.sum = (await c.query('SELECT 1 + 1 AS s')).rows[0].s;
  // Extended protocol with parameters, named prepared statement reused.
  const q = { name: 'by-id', text: 'SELECT $1::int * 2 AS d', values: [21] };
  out.prepared = (await c.query(q)).rows[0].d;
  out.prepared_again = (await c.query({ ...q, values: [50] })).rows[0].d;
  try {
    await c.query('SELECT * FROM no_such_table');
  } catch (e) {
    out.error_sqlstate = e.code;
  }
  out.after_error = (await c.query('SELECT 7 AS x')).rows[0].x;
  await c.end();
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
