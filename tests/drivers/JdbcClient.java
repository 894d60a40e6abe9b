// pgJDBC (DBeaver, Metabase, Tableau, JetBrains IDEs) against `tickerlake serve`; tests/drivers.rs
// compiles and runs it. Usage: java -cp postgresql.jar:DIR JdbcClient HOST PORT SINCE
// (password from PGPASSWORD; sslmode/sslrootcert from TL_JDBC_SSL="verify-full,/path/ca.pem").
// Prints one JSON object: a parameterised query's rows and Java types, and what
// DatabaseMetaData.getTables/getColumns list. The Rust test compares it with the lake.

import java.sql.*;
import java.util.*;

public class JdbcClient {
    static String q(String s) {
        return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/tickerlake";
        Properties props = new Properties();
        props.setProperty("user", "analyst");
        props.setProperty("connectTimeout", "10");
        String password = System.getenv("PGPASSWORD");
        if (password != null) props.setProperty("password", password);
        String ssl = System.getenv("TL_JDBC_SSL");
        if (ssl != null) {
            String[] parts = ssl.split(",", 2);
            props.setProperty("sslmode", parts[0]);
            props.setProperty("sslrootcert", parts[1]);
        }
        StringBuilder out = new StringBuilder("{");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            // A server-side prepared statement with a timestamp parameter (prepareThreshold=1).
            List<String> rows = new ArrayList<>();
            List<String> types = new ArrayList<>();
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT \"timestamp\", price FROM processed WHERE symbol = ? AND \"timestamp\" >= ? ORDER BY \"timestamp\" LIMIT 5")) {
                ps.unwrap(org.postgresql.PGStatement.class).setPrepareThreshold(1);
                ps.setString(1, "BTCUSDT");
                ps.setTimestamp(2, Timestamp.valueOf(args[2]));
                for (int run = 0; run < 2; run++) {
                    rows.clear();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            Timestamp t = rs.getTimestamp(1);
                            double p = rs.getDouble(2);
                            if (types.isEmpty()) {
                                types.add(rs.getObject(1).getClass().getSimpleName());
                                types.add(rs.getObject(2).getClass().getSimpleName());
                            }
                            rows.add("[" + q(t.toLocalDateTime().toString().replace('T', ' ')) + ", " + p + "]");
                        }
                    }
                }
            }
            out.append("\"rows\": [").append(String.join(", ", rows)).append("], ");
            out.append("\"types\": [").append(String.join(", ", types.stream().map(JdbcClient::q).toList())).append("], ");
            DatabaseMetaData md = conn.getMetaData();
            List<String> views = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, null, "%", new String[] {"VIEW"})) {
                while (rs.next()) views.add(q(rs.getString("TABLE_NAME")));
            }
            out.append("\"views\": [").append(String.join(", ", views)).append("], ");
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, null, "processed", "%")) {
                while (rs.next()) {
                    columns.add("[" + q(rs.getString("COLUMN_NAME")) + ", " + q(rs.getString("TYPE_NAME")) + ", " + rs.getInt("DATA_TYPE") + "]");
                }
            }
            out.append("\"columns\": [").append(String.join(", ", columns)).append("], ");
            out.append("\"product\": ").append(q(md.getDatabaseProductName() + " " + md.getDatabaseProductVersion()));
        }
        System.out.println(out.append("}"));
    }
}
