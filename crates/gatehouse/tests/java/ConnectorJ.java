// MariaDB Connector/J through the gateway, with server-side prepared statements
// (useServerPrepStmts): one line per step for the Rust test to check.
// Usage: java -cp mariadb-java-client.jar:. ConnectorJ PORT TOKEN
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;

public class ConnectorJ {
    public static void main(String[] args) throws Exception {
        Properties p = new Properties();
        p.setProperty("user", "fraud-bot");
        p.setProperty("password", args[1]);
        p.setProperty("useSsl", "true");
        p.setProperty("trustServerCertificate", "true");
        p.setProperty("useServerPrepStmts", "true");
        String url = "jdbc:mariadb://127.0.0.1:" + args[0] + "/shop";
        try (Connection c = DriverManager.getConnection(url, p)) {
            try (PreparedStatement s = c.prepareStatement(
                    "SELECT id, card_number FROM payments WHERE id = ?")) {
                s.setInt(1, 1);
                try (ResultSet r = s.executeQuery()) {
                    while (r.next()) {
                        System.out.println("ROW " + r.getInt(1) + " " + r.getString(2));
                    }
                }
            }
            try (PreparedStatement s = c.prepareStatement("DELETE FROM payments WHERE id = ?")) {
                s.setInt(1, 1);
                s.executeUpdate();
                System.out.println("RAN delete");
            } catch (SQLException e) {
                System.out.println("ERR " + e.getErrorCode() + " " + e.getMessage());
            }
        }
    }
}
