#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
use super::*;
#[test]
fn probe() {
    for s in ["SELECT 1", "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;", "LOCK TABLES t WRITE", "UNLOCK TABLES", "ALTER TABLE t DISABLE KEYS", "START TRANSACTION WITH CONSISTENT SNAPSHOT", "SET NAMES utf8mb4", "SHOW CREATE TABLE t", "SELECT @@version", "LOAD DATA LOCAL INFILE 'x' INTO TABLE t", "CREATE USER 'u'@'%'", "SELECT a INTO OUTFILE '/tmp/x' FROM t", "SELECT a FROM t INTO OUTFILE '/tmp/x'", "FLUSH TABLES", "PREPARE s FROM 'SELECT 1'", "EXECUTE s USING @a", "DEALLOCATE PREPARE s", "SET GLOBAL sql_mode = 'ANSI'", "SET @@global.sql_mode = 'x'", "SET sql_mode='a', NAMES gbk", "SET CHARACTER SET gbk", "SET PASSWORD = 'x'", "KILL QUERY 12", "SHOW BINLOG EVENTS", "SHOW MASTER STATUS", "CHANGE MASTER TO MASTER_HOST='h'", "INSTALL PLUGIN x SONAME 'y.so'", "CALL p(1)", "SELECT LOAD_FILE('/etc/passwd')", "ALTER USER 'u'@'%' IDENTIFIED BY 'x'", "DROP USER 'u'@'%'", "GRANT SELECT ON db.* TO 'u'@'%'", "REPLACE INTO t VALUES (1)", "INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = 2", "DELETE p FROM payments p JOIN x ON p.a = x.a", "UPDATE a, b SET a.x = b.y", "SET @x = (SELECT card_number FROM payments)", "SET SESSION sql_mode = DEFAULT", "PURGE BINARY LOGS TO 'x'", "START SLAVE", "STOP REPLICA", "SHOW SLAVE STATUS", "SHOW REPLICA STATUS", "RENAME TABLE a TO b", "CREATE TABLE t2 AS SELECT * FROM t", "EXPLAIN SELECT a FROM t", "DESCRIBE t", "USE db", "BEGIN", "SELECT * FROM t FOR UPDATE", "SET autocommit=0", "SHOW PROCESSLIST", "UNINSTALL PLUGIN x", "LOAD DATA INFILE 'x' INTO TABLE t", "SELECT a FROM t INTO DUMPFILE '/tmp/x'", "SELECT a INTO @v FROM t"] {
        let r = analyze_mysql(s, &MysqlContext{database: Some("db".into())});
        match r {
            Ok(v) => eprintln!("OK   {s}\n     {:?}", v.iter().map(|i| (&i.kind, &i.kinds, &i.set_setting, i.copy_file)).collect::<Vec<_>>()),
            Err(e) => eprintln!("ERR  {s}: {e}"),
        }
    }
}
#[test]
fn probe2() {
    use sqlparser::dialect::MySqlDialect;
    for s in ["SHOW BINLOG EVENTS", "SHOW MASTER STATUS", "SHOW SLAVE STATUS", "SHOW RELAYLOG EVENTS", "SET PASSWORD FOR 'u'@'%' = 'x'", "SELECT a FROM t", "SET x = @y"] {
        let r = Parser::parse_sql(&MySqlDialect{}, s);
        eprintln!("{s}: {r:?}");
    }
}
