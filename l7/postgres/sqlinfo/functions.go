package sqlinfo

import "strings"

// isPure reports whether a call to name (as Statement.Functions spells it)
// leaves a statement read-only: the name, unqualified or qualified with
// pg_catalog, is in pureFunctions.
func isPure(name string) bool {
	name = strings.TrimPrefix(name, "pg_catalog.")
	if strings.IndexByte(name, '.') >= 0 {
		return false
	}
	_, ok := pureFunctions[name]
	return ok
}

// pureFunctions are common built-in functions that change no data, no
// session state and read nothing outside the database's tables: calling one
// keeps a statement read-only. The list is an allowlist on purpose; anything
// absent (including nextval, set_config, pg_sleep, pg_read_file, dblink,
// lo_* and every extension or user function) makes a statement not
// read-only. Volatile is fine (random, clock_timestamp): read-only is about
// writes.
var pureFunctions = setOf(
	// Aggregates.
	"count", "sum", "avg", "min", "max", "array_agg", "string_agg", "bool_and", "bool_or", "every",
	"bit_and", "bit_or", "bit_xor", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg",
	"stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "corr", "covar_pop",
	"covar_samp", "regr_slope", "regr_intercept", "regr_count", "regr_r2", "percentile_cont",
	"percentile_disc", "mode", "any_value", "xmlagg",
	// Window functions.
	"row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead",
	"first_value", "last_value", "nth_value",
	// Strings.
	"lower", "upper", "initcap", "length", "char_length", "character_length", "octet_length",
	"bit_length", "substring", "substr", "left", "right", "trim", "btrim", "ltrim", "rtrim", "lpad",
	"rpad", "replace", "translate", "concat", "concat_ws", "position", "strpos", "split_part",
	"repeat", "reverse", "starts_with", "format", "overlay", "ascii", "chr", "md5", "sha224",
	"sha256", "sha384", "sha512", "encode", "decode", "to_hex", "quote_ident", "quote_literal",
	"quote_nullable", "regexp_replace", "regexp_match", "regexp_matches", "regexp_split_to_array",
	"regexp_split_to_table", "regexp_like", "regexp_count", "regexp_instr", "regexp_substr",
	"string_to_array", "string_to_table", "array_to_string", "like_escape", "similar_to_escape",
	"normalize", "is_normalized", "unistr", "to_ascii", "convert_from", "convert_to",
	// Numbers.
	"abs", "ceil", "ceiling", "floor", "round", "trunc", "mod", "div", "power", "pow", "sqrt",
	"cbrt", "exp", "ln", "log", "log10", "sign", "pi", "degrees", "radians", "random",
	"random_normal", "width_bucket", "gcd", "lcm", "factorial", "scale", "min_scale",
	"trim_scale", "sin", "cos", "tan", "asin", "acos", "atan", "atan2",
	// Dates and times.
	"now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday",
	"date_trunc", "date_part", "date_bin", "extract", "age", "to_char", "to_date", "to_timestamp",
	"to_number", "make_date", "make_time", "make_timestamp", "make_timestamptz", "make_interval",
	"timezone", "justify_days", "justify_hours", "justify_interval", "isfinite", "overlaps",
	// Arrays and sets.
	"array_length", "array_upper", "array_lower", "array_ndims", "array_dims", "cardinality",
	"unnest", "array_append", "array_prepend", "array_cat", "array_position", "array_positions",
	"array_remove", "array_replace", "array_fill", "generate_series", "generate_subscripts",
	// JSON.
	"to_json", "to_jsonb", "row_to_json", "array_to_json", "json_build_object",
	"jsonb_build_object", "json_build_array", "jsonb_build_array", "json_object", "jsonb_object",
	"json_extract_path", "json_extract_path_text", "jsonb_extract_path",
	"jsonb_extract_path_text", "json_array_length", "jsonb_array_length", "json_each",
	"jsonb_each", "json_each_text", "jsonb_each_text", "json_array_elements",
	"jsonb_array_elements", "json_array_elements_text", "jsonb_array_elements_text",
	"json_object_keys", "jsonb_object_keys", "json_typeof", "jsonb_typeof", "json_strip_nulls",
	"jsonb_strip_nulls", "jsonb_pretty", "jsonb_set", "jsonb_insert", "jsonb_path_query",
	"jsonb_path_query_array", "jsonb_path_query_first", "jsonb_path_exists", "jsonb_path_match",
	"json_populate_record", "jsonb_populate_record", "json_to_record", "jsonb_to_record",
	"json_to_recordset", "jsonb_to_recordset",
	// Text search.
	"to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery",
	"ts_rank", "ts_rank_cd", "ts_headline", "setweight",
	// UUIDs and misc values.
	"gen_random_uuid", "uuidv4", "num_nonnulls", "num_nulls",
	// Session and catalog information, as psql's \d commands use them.
	"current_setting", "current_database", "current_schema", "current_schemas", "version",
	"pg_backend_pid", "pg_typeof", "format_type", "pg_collation_for", "system_user",
	"pg_get_userbyid", "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible",
	"pg_get_expr", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_viewdef",
	"pg_get_triggerdef", "pg_get_ruledef", "pg_get_functiondef", "pg_get_function_arguments",
	"pg_get_function_result", "pg_get_function_identity_arguments", "pg_get_partkeydef",
	"pg_get_partition_constraintdef", "pg_get_statisticsobjdef_columns", "pg_get_serial_sequence",
	"obj_description", "col_description", "shobj_description", "pg_encoding_to_char",
	"pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size",
	"pg_database_size", "pg_size_pretty", "pg_relation_is_publishable",
	"has_table_privilege", "has_column_privilege", "has_schema_privilege",
	"has_database_privilege", "has_function_privilege", "has_sequence_privilege", "pg_has_role",
	"array_to_string", "pg_is_in_recovery", "inet_server_addr", "inet_server_port",
)

func setOf(names ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}
