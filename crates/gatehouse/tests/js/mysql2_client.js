// node mysql2 through the gateway: query() (text protocol) and execute() (server-side prepared
// statements, binary protocol). Prints one line per step for the Rust test to check.
// Usage: node mysql2_client.js PORT TOKEN
const mysql = require("mysql2/promise");

async function main() {
  const [port, token] = process.argv.slice(2);
  const c = await mysql.createConnection({
    host: "127.0.0.1",
    port: Number(port),
    user: "fraud-bot",
    password: token,
    database: "shop",
    ssl: { rejectUnauthorized: false },
  });
  const [q] = await c.query("SELECT id, card_number FROM payments ORDER BY id");
  console.log("QUERY " + JSON.stringify(q));
  const [e] = await c.execute("SELECT id, card_number FROM payments WHERE id = ?", [2]);
  console.log("EXECUTE " + JSON.stringify(e));
  const [l] = await c.execute("SELECT id FROM payments WHERE card_number = ?", ["4111111111111111"]);
  console.log("LOOKUP " + JSON.stringify(l));
  for (const sql of ["DELETE FROM payments WHERE id = ?", "SELECT id FROM payments WHERE card_number LIKE ?"]) {
    try {
      await c.execute(sql, [1]);
      console.log("RAN " + sql);
    } catch (err) {
      console.log("ERR " + err.errno + " " + err.message);
    }
  }
  await c.end();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
