-- The PostgreSQL compatibility schema of a `serve` snapshot (see src/serve/compat.rs, which
-- rewrites `pg_catalog.X` into `pg_compat.X`). Created before the configuration is locked; holds
-- no path. Its two holes (pg_settings' rows: name, setting, short_desc; and the PostgreSQL
-- version) are filled by compat::schema_sql.
CREATE SCHEMA pg_compat;

-- PostgreSQL's type OID of a DuckDB type name (as duckdb_columns() spells it); the handler sends
-- the same OIDs on the wire (serve::handler::pg_type_of_duckdb).
CREATE MACRO pg_compat.type_oid(t) AS CASE
    WHEN t = 'BOOLEAN' THEN 16
    WHEN t IN ('TINYINT', 'SMALLINT', 'UTINYINT') THEN 21
    WHEN t IN ('INTEGER', 'USMALLINT') THEN 23
    WHEN t IN ('BIGINT', 'UINTEGER') THEN 20
    WHEN t IN ('UBIGINT', 'HUGEINT', 'UHUGEINT') OR t LIKE 'DECIMAL%' THEN 1700
    WHEN t = 'FLOAT' THEN 700
    WHEN t = 'DOUBLE' THEN 701
    WHEN t = 'DATE' THEN 1082
    WHEN t IN ('TIMESTAMP', 'TIMESTAMP_S', 'TIMESTAMP_MS', 'TIMESTAMP_NS') THEN 1114
    WHEN t IN ('TIMESTAMP WITH TIME ZONE', 'TIMESTAMPTZ') THEN 1184
    WHEN t IN ('VARCHAR', 'UUID') THEN 1043
    ELSE 25 END::BIGINT;

-- The types clients look up, with PostgreSQL's OIDs, lengths and names.
CREATE VIEW pg_compat.pg_type AS
SELECT oid::BIGINT AS oid, typname, 11::BIGINT AS typnamespace, 10::BIGINT AS typowner, typlen::SMALLINT AS typlen,
       typlen > 0 AS typbyval, 'b' AS typtype, typcategory, false AS typispreferred, true AS typisdefined, ',' AS typdelim,
       0::BIGINT AS typrelid, 0::BIGINT AS typelem, typarray::BIGINT AS typarray, typname || 'in' AS typinput,
       typname || 'out' AS typoutput, typname || 'recv' AS typreceive, typname || 'send' AS typsend, 0::BIGINT AS typbasetype,
       -1 AS typtypmod, false AS typnotnull, 0 AS typndims, CASE WHEN typcategory = 'S' THEN 100 ELSE 0 END::BIGINT AS typcollation,
       NULL::VARCHAR AS typdefault, NULL::VARCHAR AS typacl, display AS "display"
FROM (VALUES
    (16, 'bool', 1, 'B', 1000, 'boolean'),
    (17, 'bytea', -1, 'U', 1001, 'bytea'),
    (18, 'char', 1, 'Z', 1002, '"char"'),
    (19, 'name', 64, 'S', 1003, 'name'),
    (20, 'int8', 8, 'N', 1016, 'bigint'),
    (21, 'int2', 2, 'N', 1005, 'smallint'),
    (23, 'int4', 4, 'N', 1007, 'integer'),
    (25, 'text', -1, 'S', 1009, 'text'),
    (26, 'oid', 4, 'N', 1028, 'oid'),
    (114, 'json', -1, 'U', 199, 'json'),
    (700, 'float4', 4, 'N', 1021, 'real'),
    (701, 'float8', 8, 'N', 1022, 'double precision'),
    (1042, 'bpchar', -1, 'S', 1014, 'character'),
    (1043, 'varchar', -1, 'S', 1015, 'character varying'),
    (1082, 'date', 4, 'D', 1182, 'date'),
    (1114, 'timestamp', 8, 'D', 1115, 'timestamp without time zone'),
    (1184, 'timestamptz', 8, 'D', 1185, 'timestamp with time zone'),
    (1700, 'numeric', -1, 'N', 1231, 'numeric'),
    (2950, 'uuid', 16, 'U', 2951, 'uuid')
) t(oid, typname, typlen, typcategory, typarray, display);

CREATE VIEW pg_compat.pg_namespace AS
SELECT * FROM (VALUES
    (11::BIGINT, 'pg_catalog', 10::BIGINT, NULL::VARCHAR),
    (2200, 'main', 10, NULL),
    (13000, 'information_schema', 10, NULL)
) t(oid, nspname, nspowner, nspacl);

-- The lake's views (OIDs from 16384 as PostgreSQL's user objects, by name) and the catalog
-- relations clients name in `'pg_class'::regclass`.
CREATE VIEW pg_compat.pg_class AS
SELECT oid::BIGINT AS oid, relname, relnamespace::BIGINT AS relnamespace, relkind, 0::BIGINT AS reltype, 10::BIGINT AS relowner,
       0::BIGINT AS relam, 0::BIGINT AS relfilenode, 0::BIGINT AS reltablespace, 0 AS relpages, -1.0::FLOAT AS reltuples,
       0::BIGINT AS reltoastrelid, false AS relhasindex, false AS relisshared, 'p' AS relpersistence, natts::SMALLINT AS relnatts,
       0::SMALLINT AS relchecks, false AS relhasrules, false AS relhastriggers, false AS relhassubclass, false AS relrowsecurity,
       false AS relforcerowsecurity, true AS relispopulated, 'n' AS relreplident, false AS relispartition, NULL::VARCHAR AS relacl,
       NULL::VARCHAR[] AS reloptions, NULL::VARCHAR AS relpartbound
FROM (
    SELECT 16384 + row_number() OVER (ORDER BY view_name) AS oid, view_name AS relname, 2200 AS relnamespace, 'v' AS relkind,
           column_count AS natts
    FROM system.main.duckdb_views() WHERE schema_name = 'main' AND NOT internal AND NOT temporary
    UNION ALL
    SELECT * FROM (VALUES (1247, 'pg_type', 11, 'r', 0), (1249, 'pg_attribute', 11, 'r', 0), (1255, 'pg_proc', 11, 'r', 0),
                          (1259, 'pg_class', 11, 'r', 0), (2604, 'pg_attrdef', 11, 'r', 0), (2609, 'pg_description', 11, 'r', 0),
                          (2615, 'pg_namespace', 11, 'r', 0), (1262, 'pg_database', 11, 'r', 0))
);

CREATE VIEW pg_compat.pg_attribute AS
SELECT c.oid AS attrelid, col.column_name AS attname, pg_compat.type_oid(col.data_type) AS atttypid, -1 AS attstattarget,
       coalesce(t.typlen, -1)::SMALLINT AS attlen, col.column_index::SMALLINT AS attnum, 0 AS attndims, -1 AS attcacheoff,
       -1 AS atttypmod, coalesce(t.typbyval, false) AS attbyval, 'd' AS attalign, 'p' AS attstorage, '' AS attcompression,
       NOT col.is_nullable AS attnotnull, false AS atthasdef, false AS atthasmissing, '' AS attidentity, '' AS attgenerated,
       false AS attisdropped, true AS attislocal, 0 AS attinhcount, coalesce(t.typcollation, 0) AS attcollation,
       NULL::VARCHAR AS attacl, NULL::VARCHAR[] AS attoptions, NULL::VARCHAR[] AS attfdwoptions
FROM system.main.duckdb_columns() col
JOIN pg_compat.pg_class c ON c.relname = col.table_name AND c.relnamespace = 2200
LEFT JOIN pg_compat.pg_type t ON t.oid = pg_compat.type_oid(col.data_type)
WHERE col.schema_name = 'main' AND NOT col.internal;

CREATE VIEW pg_compat.pg_views AS
SELECT 'main' AS schemaname, relname AS viewname, 'tickerlake' AS viewowner, NULL::VARCHAR AS definition
FROM pg_compat.pg_class WHERE relkind = 'v';

CREATE VIEW pg_compat.pg_matviews AS
SELECT NULL::VARCHAR AS schemaname, NULL::VARCHAR AS matviewname, NULL::VARCHAR AS matviewowner, NULL::VARCHAR AS tablespace,
       false AS hasindexes, false AS ispopulated, NULL::VARCHAR AS definition WHERE false;

CREATE VIEW pg_compat.pg_tables AS
SELECT NULL::VARCHAR AS schemaname, NULL::VARCHAR AS tablename, NULL::VARCHAR AS tableowner, NULL::VARCHAR AS tablespace,
       false AS hasindexes, false AS hasrules, false AS hastriggers, false AS rowsecurity WHERE false;

-- Catalogs with nothing to list (no comments, defaults, indexes, constraints, functions…).
CREATE VIEW pg_compat.pg_description AS
SELECT 0::BIGINT AS objoid, 0::BIGINT AS classoid, 0 AS objsubid, NULL::VARCHAR AS description WHERE false;
CREATE VIEW pg_compat.pg_attrdef AS
SELECT 0::BIGINT AS oid, 0::BIGINT AS adrelid, 0::SMALLINT AS adnum, NULL::VARCHAR AS adbin WHERE false;
CREATE VIEW pg_compat.pg_index AS
SELECT 0::BIGINT AS indexrelid, 0::BIGINT AS indrelid, 0::SMALLINT AS indnatts, 0::SMALLINT AS indnkeyatts, false AS indisunique,
       false AS indisprimary, false AS indisexclusion, false AS indimmediate, false AS indisclustered, false AS indisvalid,
       false AS indisready, false AS indislive, []::SMALLINT[] AS indkey, NULL::VARCHAR AS indexprs, NULL::VARCHAR AS indpred WHERE false;
CREATE VIEW pg_compat.pg_constraint AS
SELECT 0::BIGINT AS oid, NULL::VARCHAR AS conname, 0::BIGINT AS connamespace, NULL::VARCHAR AS contype, false AS condeferrable,
       false AS condeferred, 0::BIGINT AS conrelid, 0::BIGINT AS contypid, 0::BIGINT AS conindid, 0::BIGINT AS confrelid,
       []::SMALLINT[] AS conkey, []::SMALLINT[] AS confkey, NULL::VARCHAR AS confupdtype, NULL::VARCHAR AS confdeltype WHERE false;
CREATE VIEW pg_compat.pg_inherits AS SELECT 0::BIGINT AS inhrelid, 0::BIGINT AS inhparent, 0 AS inhseqno WHERE false;
CREATE VIEW pg_compat.pg_proc AS
SELECT 0::BIGINT AS oid, NULL::VARCHAR AS proname, 0::BIGINT AS pronamespace, 0::BIGINT AS prorettype, NULL::VARCHAR AS prokind,
       []::BIGINT[] AS proargtypes, false AS proretset WHERE false;
CREATE VIEW pg_compat.pg_collation AS SELECT 0::BIGINT AS oid, NULL::VARCHAR AS collname, 0::BIGINT AS collnamespace WHERE false;
CREATE VIEW pg_compat.pg_enum AS SELECT 0::BIGINT AS oid, 0::BIGINT AS enumtypid, 0.0::FLOAT AS enumsortorder, NULL::VARCHAR AS enumlabel WHERE false;
CREATE VIEW pg_compat.pg_range AS SELECT 0::BIGINT AS rngtypid, 0::BIGINT AS rngsubtype WHERE false;
CREATE VIEW pg_compat.pg_sequence AS SELECT 0::BIGINT AS seqrelid, 0::BIGINT AS seqtypid, 0::BIGINT AS seqstart WHERE false;
CREATE VIEW pg_compat.pg_extension AS SELECT 0::BIGINT AS oid, NULL::VARCHAR AS extname, NULL::VARCHAR AS extversion WHERE false;
CREATE VIEW pg_compat.pg_am AS SELECT * FROM (VALUES (2::BIGINT, 'heap', 't')) t(oid, amname, amtype);
CREATE VIEW pg_compat.pg_roles AS
SELECT 10::BIGINT AS oid, 'tickerlake' AS rolname, false AS rolsuper, false AS rolinherit, false AS rolcreaterole,
       false AS rolcreatedb, true AS rolcanlogin, false AS rolreplication, -1 AS rolconnlimit;
CREATE VIEW pg_compat.pg_user AS
SELECT 'tickerlake' AS usename, 10::BIGINT AS usesysid, false AS usecreatedb, false AS usesuper, false AS userepl;
CREATE VIEW pg_compat.pg_database AS
SELECT 16383::BIGINT AS oid, 'tickerlake' AS datname, 10::BIGINT AS datdba, 6 AS encoding, 'C' AS datcollate, 'C' AS datctype,
       false AS datistemplate, true AS datallowconn, -1 AS datconnlimit, NULL::VARCHAR AS datacl;
CREATE VIEW pg_compat.pg_settings AS
SELECT name, setting, NULL::VARCHAR AS unit, 'Client Connection Defaults' AS category, short_desc, 'user' AS context,
       'string' AS vartype, 'default' AS source
FROM (VALUES {settings}) t(name, setting, short_desc);

-- DuckDB's own views and settings, without the host's paths.
CREATE VIEW pg_compat.information_schema_views AS
SELECT * REPLACE (NULL::VARCHAR AS view_definition) FROM information_schema.views
WHERE table_catalog = 'memory' AND table_schema = 'main';
CREATE MACRO pg_compat.duckdb_settings() AS TABLE
SELECT * REPLACE (CASE WHEN value LIKE '%/%' AND name <> 'TimeZone' THEN '(hidden)' ELSE value END AS value,
                  CASE WHEN value LIKE '%/%' AND name <> 'TimeZone' THEN NULL ELSE typed_value END AS typed_value)
FROM system.main.duckdb_settings();
CREATE MACRO pg_compat.duckdb_views() AS TABLE SELECT * REPLACE (NULL::VARCHAR AS sql) FROM system.main.duckdb_views();
CREATE MACRO pg_compat.duckdb_temporary_files() AS TABLE
SELECT * REPLACE ('(hidden)' AS path) FROM system.main.duckdb_temporary_files();
CREATE MACRO pg_compat.duckdb_extensions() AS TABLE
SELECT * REPLACE (NULL::VARCHAR AS install_path) FROM system.main.duckdb_extensions();
CREATE MACRO pg_compat.duckdb_databases() AS TABLE SELECT * REPLACE (NULL::VARCHAR AS path) FROM system.main.duckdb_databases();
CREATE MACRO pg_compat.duckdb_external_file_cache() AS TABLE
SELECT * REPLACE ('(hidden)' AS path) FROM system.main.duckdb_external_file_cache();

-- Functions PostgreSQL clients call.
CREATE MACRO pg_compat.version() AS 'PostgreSQL {pg_version} (tickerlake serve over DuckDB; read-only)';
CREATE MACRO pg_compat.current_setting(setting_name) AS (SELECT setting FROM pg_compat.pg_settings WHERE name = lower(setting_name)),
    (setting_name, missing_ok) AS (SELECT setting FROM pg_compat.pg_settings WHERE name = lower(setting_name));
CREATE MACRO pg_compat.current_schema() AS 'main';
CREATE MACRO pg_compat.current_schemas(include_implicit) AS
    CASE WHEN include_implicit THEN ['pg_catalog', 'main'] ELSE ['main'] END;
CREATE MACRO pg_compat.current_database() AS 'tickerlake';
CREATE MACRO pg_compat.current_user() AS 'tickerlake';
CREATE MACRO pg_compat.session_user() AS 'tickerlake';
CREATE MACRO pg_compat.pg_backend_pid() AS 0;
CREATE MACRO pg_compat.pg_is_in_recovery() AS false;
CREATE MACRO pg_compat.quote_ident(s) AS
    CASE WHEN regexp_full_match(s, '[a-z_][a-z0-9_]*') THEN s ELSE '"' || replace(s, '"', '""') || '"' END;
CREATE MACRO pg_compat.format_type(type_oid, typemod) AS (SELECT "display" FROM pg_compat.pg_type WHERE oid = type_oid);
CREATE MACRO pg_compat.pg_table_is_visible(rel) AS true;
CREATE MACRO pg_compat.pg_type_is_visible(typ) AS true;
CREATE MACRO pg_compat.pg_get_expr(expr, rel) AS NULL::VARCHAR, (expr, rel, pretty) AS NULL::VARCHAR;
CREATE MACRO pg_compat.pg_get_userbyid(role) AS 'tickerlake';
CREATE MACRO pg_compat.pg_get_serial_sequence(rel, col) AS NULL::VARCHAR;
CREATE MACRO pg_compat.obj_description(obj) AS NULL::VARCHAR, (obj, catalog) AS NULL::VARCHAR;
CREATE MACRO pg_compat.col_description(rel, col) AS NULL::VARCHAR;
CREATE MACRO pg_compat.pg_encoding_to_char(enc) AS 'UTF8';
CREATE MACRO pg_compat.has_table_privilege(a, b) AS true, (a, b, c) AS true;
CREATE MACRO pg_compat.has_schema_privilege(a, b) AS true, (a, b, c) AS true;
CREATE MACRO pg_compat.has_database_privilege(a, b) AS true, (a, b, c) AS true;
CREATE MACRO pg_compat.to_regtype(type_name) AS (SELECT oid FROM pg_compat.pg_type WHERE typname = lower(type_name) OR "display" = lower(type_name));
CREATE MACRO pg_compat.to_regclass(rel_name) AS (SELECT oid FROM pg_compat.pg_class WHERE relname = regexp_replace(rel_name, '^.*\.', ''));

-- Casts to PostgreSQL's object-identifier types (`'pg_class'::regclass`, `oid::regtype::text`).
CREATE MACRO pg_compat.regclass_oid(v) AS (SELECT oid FROM pg_compat.pg_class WHERE relname = regexp_replace(replace(v, '"', ''), '^.*\.', ''));
CREATE MACRO pg_compat.regclass_name(v) AS (SELECT relname FROM pg_compat.pg_class WHERE oid = v);
CREATE MACRO pg_compat.regtype_oid(v) AS pg_compat.to_regtype(v);
CREATE MACRO pg_compat.regtype_name(v) AS pg_compat.format_type(v, NULL);
CREATE MACRO pg_compat.regnamespace_oid(v) AS (SELECT oid FROM pg_compat.pg_namespace WHERE nspname = v);
CREATE MACRO pg_compat.regnamespace_name(v) AS (SELECT nspname FROM pg_compat.pg_namespace WHERE oid = v);
CREATE MACRO pg_compat.regproc_oid(v) AS NULL::BIGINT;
CREATE MACRO pg_compat.regproc_name(v) AS NULL::VARCHAR;
CREATE MACRO pg_compat.regprocedure_oid(v) AS NULL::BIGINT;
CREATE MACRO pg_compat.regprocedure_name(v) AS NULL::VARCHAR;
CREATE MACRO pg_compat.regrole_oid(v) AS 10::BIGINT;
CREATE MACRO pg_compat.regrole_name(v) AS 'tickerlake';
