package sqlinfo

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// unknownTag is what PostgreSQL reports for a statement it has no tag for.
const unknownTag = "???"

// commandTag returns the command tag PostgreSQL's CreateCommandTag
// (tcop/utility.c) gives a raw statement: what psql shows after running it.
func commandTag(n *pg_query.Node) string {
	switch s := n.GetNode().(type) {
	case nil:
		return unknownTag
	case *pg_query.Node_TransactionStmt:
		return transactionTags[s.TransactionStmt.GetKind()]
	case *pg_query.Node_ClosePortalStmt:
		if s.ClosePortalStmt.GetPortalname() == "" {
			return "CLOSE CURSOR ALL"
		}
		return "CLOSE CURSOR"
	case *pg_query.Node_FetchStmt:
		if s.FetchStmt.GetIsmove() {
			return "MOVE"
		}
		return "FETCH"
	case *pg_query.Node_DeallocateStmt:
		if s.DeallocateStmt.GetIsall() || s.DeallocateStmt.GetName() == "" {
			return "DEALLOCATE ALL"
		}
		return "DEALLOCATE"
	case *pg_query.Node_SelectStmt:
		if s.SelectStmt.GetIntoClause() != nil {
			return "SELECT INTO"
		}
		return "SELECT"
	case *pg_query.Node_DropStmt:
		return prefixed("DROP ", dropNouns, s.DropStmt.GetRemoveType())
	case *pg_query.Node_RenameStmt:
		r := s.RenameStmt
		t := r.GetRenameType()
		if t == pg_query.ObjectType_OBJECT_COLUMN {
			t = r.GetRelationType()
		}
		return alterTag(t)
	case *pg_query.Node_AlterObjectDependsStmt:
		return alterTag(s.AlterObjectDependsStmt.GetObjectType())
	case *pg_query.Node_AlterObjectSchemaStmt:
		return alterTag(s.AlterObjectSchemaStmt.GetObjectType())
	case *pg_query.Node_AlterOwnerStmt:
		return alterTag(s.AlterOwnerStmt.GetObjectType())
	case *pg_query.Node_AlterTableMoveAllStmt:
		return alterTag(s.AlterTableMoveAllStmt.GetObjtype())
	case *pg_query.Node_AlterTableStmt:
		return alterTag(s.AlterTableStmt.GetObjtype())
	case *pg_query.Node_AlterFunctionStmt:
		switch s.AlterFunctionStmt.GetObjtype() {
		case pg_query.ObjectType_OBJECT_FUNCTION, pg_query.ObjectType_OBJECT_PROCEDURE, pg_query.ObjectType_OBJECT_ROUTINE:
			return alterTag(s.AlterFunctionStmt.GetObjtype())
		}
		return unknownTag
	case *pg_query.Node_GrantStmt:
		if s.GrantStmt.GetIsGrant() {
			return "GRANT"
		}
		return "REVOKE"
	case *pg_query.Node_GrantRoleStmt:
		if s.GrantRoleStmt.GetIsGrant() {
			return "GRANT ROLE"
		}
		return "REVOKE ROLE"
	case *pg_query.Node_DefineStmt:
		return prefixed("CREATE ", defineNouns, s.DefineStmt.GetKind())
	case *pg_query.Node_CreateFunctionStmt:
		if s.CreateFunctionStmt.GetIsProcedure() {
			return "CREATE PROCEDURE"
		}
		return "CREATE FUNCTION"
	case *pg_query.Node_VacuumStmt:
		if s.VacuumStmt.GetIsVacuumcmd() {
			return "VACUUM"
		}
		return "ANALYZE"
	case *pg_query.Node_CreateTableAsStmt:
		c := s.CreateTableAsStmt
		switch c.GetObjtype() {
		case pg_query.ObjectType_OBJECT_TABLE:
			if c.GetIsSelectInto() {
				return "SELECT INTO"
			}
			return "CREATE TABLE AS"
		case pg_query.ObjectType_OBJECT_MATVIEW:
			return "CREATE MATERIALIZED VIEW"
		}
		return unknownTag
	case *pg_query.Node_VariableSetStmt:
		switch s.VariableSetStmt.GetKind() {
		case pg_query.VariableSetKind_VAR_RESET, pg_query.VariableSetKind_VAR_RESET_ALL:
			return "RESET"
		}
		return "SET"
	case *pg_query.Node_DiscardStmt:
		switch s.DiscardStmt.GetTarget() {
		case pg_query.DiscardMode_DISCARD_ALL:
			return "DISCARD ALL"
		case pg_query.DiscardMode_DISCARD_PLANS:
			return "DISCARD PLANS"
		case pg_query.DiscardMode_DISCARD_TEMP:
			return "DISCARD TEMP"
		case pg_query.DiscardMode_DISCARD_SEQUENCES:
			return "DISCARD SEQUENCES"
		}
		return unknownTag
	}
	// Every other statement has one tag, named by its node type.
	if tag, ok := fixedTags[n.ProtoReflect().WhichOneof(nodeOneof).Message().Name()]; ok {
		return tag
	}
	return unknownTag
}

var transactionTags = map[pg_query.TransactionStmtKind]string{
	pg_query.TransactionStmtKind_TRANS_STMT_BEGIN:             "BEGIN",
	pg_query.TransactionStmtKind_TRANS_STMT_START:             "START TRANSACTION",
	pg_query.TransactionStmtKind_TRANS_STMT_COMMIT:            "COMMIT",
	pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK:          "ROLLBACK",
	pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:       "ROLLBACK",
	pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:         "SAVEPOINT",
	pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:           "RELEASE",
	pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:           "PREPARE TRANSACTION",
	pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:   "COMMIT PREPARED",
	pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED: "ROLLBACK PREPARED",
}

// fixedTags maps the node types whose tag does not depend on their fields.
var fixedTags = map[protoreflect.Name]string{
	"InsertStmt":                   "INSERT",
	"DeleteStmt":                   "DELETE",
	"UpdateStmt":                   "UPDATE",
	"MergeStmt":                    "MERGE",
	"PLAssignStmt":                 "SELECT",
	"DeclareCursorStmt":            "DECLARE CURSOR",
	"CreateDomainStmt":             "CREATE DOMAIN",
	"CreateSchemaStmt":             "CREATE SCHEMA",
	"CreateStmt":                   "CREATE TABLE",
	"CreateTableSpaceStmt":         "CREATE TABLESPACE",
	"DropTableSpaceStmt":           "DROP TABLESPACE",
	"AlterTableSpaceOptionsStmt":   "ALTER TABLESPACE",
	"CreateExtensionStmt":          "CREATE EXTENSION",
	"AlterExtensionStmt":           "ALTER EXTENSION",
	"AlterExtensionContentsStmt":   "ALTER EXTENSION",
	"CreateFdwStmt":                "CREATE FOREIGN DATA WRAPPER",
	"AlterFdwStmt":                 "ALTER FOREIGN DATA WRAPPER",
	"CreateForeignServerStmt":      "CREATE SERVER",
	"AlterForeignServerStmt":       "ALTER SERVER",
	"CreateUserMappingStmt":        "CREATE USER MAPPING",
	"AlterUserMappingStmt":         "ALTER USER MAPPING",
	"DropUserMappingStmt":          "DROP USER MAPPING",
	"CreateForeignTableStmt":       "CREATE FOREIGN TABLE",
	"ImportForeignSchemaStmt":      "IMPORT FOREIGN SCHEMA",
	"TruncateStmt":                 "TRUNCATE TABLE",
	"CommentStmt":                  "COMMENT",
	"SecLabelStmt":                 "SECURITY LABEL",
	"CopyStmt":                     "COPY",
	"AlterDomainStmt":              "ALTER DOMAIN",
	"AlterDefaultPrivilegesStmt":   "ALTER DEFAULT PRIVILEGES",
	"CompositeTypeStmt":            "CREATE TYPE",
	"CreateEnumStmt":               "CREATE TYPE",
	"CreateRangeStmt":              "CREATE TYPE",
	"AlterEnumStmt":                "ALTER TYPE",
	"ViewStmt":                     "CREATE VIEW",
	"IndexStmt":                    "CREATE INDEX",
	"RuleStmt":                     "CREATE RULE",
	"CreateSeqStmt":                "CREATE SEQUENCE",
	"AlterSeqStmt":                 "ALTER SEQUENCE",
	"DoStmt":                       "DO",
	"CreatedbStmt":                 "CREATE DATABASE",
	"AlterDatabaseStmt":            "ALTER DATABASE",
	"AlterDatabaseRefreshCollStmt": "ALTER DATABASE",
	"AlterDatabaseSetStmt":         "ALTER DATABASE",
	"DropdbStmt":                   "DROP DATABASE",
	"NotifyStmt":                   "NOTIFY",
	"ListenStmt":                   "LISTEN",
	"UnlistenStmt":                 "UNLISTEN",
	"LoadStmt":                     "LOAD",
	"CallStmt":                     "CALL",
	"ClusterStmt":                  "CLUSTER",
	"ExplainStmt":                  "EXPLAIN",
	"RefreshMatViewStmt":           "REFRESH MATERIALIZED VIEW",
	"AlterSystemStmt":              "ALTER SYSTEM",
	"VariableShowStmt":             "SHOW",
	"CreateTransformStmt":          "CREATE TRANSFORM",
	"CreateTrigStmt":               "CREATE TRIGGER",
	"CreateEventTrigStmt":          "CREATE EVENT TRIGGER",
	"AlterEventTrigStmt":           "ALTER EVENT TRIGGER",
	"CreatePLangStmt":              "CREATE LANGUAGE",
	"CreateRoleStmt":               "CREATE ROLE",
	"AlterRoleStmt":                "ALTER ROLE",
	"AlterRoleSetStmt":             "ALTER ROLE",
	"DropRoleStmt":                 "DROP ROLE",
	"DropOwnedStmt":                "DROP OWNED",
	"ReassignOwnedStmt":            "REASSIGN OWNED",
	"LockStmt":                     "LOCK TABLE",
	"ConstraintsSetStmt":           "SET CONSTRAINTS",
	"CheckPointStmt":               "CHECKPOINT",
	"ReindexStmt":                  "REINDEX",
	"CreateConversionStmt":         "CREATE CONVERSION",
	"CreateCastStmt":               "CREATE CAST",
	"CreateOpClassStmt":            "CREATE OPERATOR CLASS",
	"CreateOpFamilyStmt":           "CREATE OPERATOR FAMILY",
	"AlterOpFamilyStmt":            "ALTER OPERATOR FAMILY",
	"AlterOperatorStmt":            "ALTER OPERATOR",
	"AlterTypeStmt":                "ALTER TYPE",
	"AlterTSDictionaryStmt":        "ALTER TEXT SEARCH DICTIONARY",
	"AlterTSConfigurationStmt":     "ALTER TEXT SEARCH CONFIGURATION",
	"CreatePolicyStmt":             "CREATE POLICY",
	"AlterPolicyStmt":              "ALTER POLICY",
	"CreateAmStmt":                 "CREATE ACCESS METHOD",
	"CreatePublicationStmt":        "CREATE PUBLICATION",
	"AlterPublicationStmt":         "ALTER PUBLICATION",
	"CreateSubscriptionStmt":       "CREATE SUBSCRIPTION",
	"AlterSubscriptionStmt":        "ALTER SUBSCRIPTION",
	"DropSubscriptionStmt":         "DROP SUBSCRIPTION",
	"AlterCollationStmt":           "ALTER COLLATION",
	"PrepareStmt":                  "PREPARE",
	"ExecuteStmt":                  "EXECUTE",
	"CreateStatsStmt":              "CREATE STATISTICS",
	"AlterStatsStmt":               "ALTER STATISTICS",
}

// Object nouns as command tags spell them.
var nouns = map[pg_query.ObjectType]string{
	pg_query.ObjectType_OBJECT_ACCESS_METHOD:   "ACCESS METHOD",
	pg_query.ObjectType_OBJECT_AGGREGATE:       "AGGREGATE",
	pg_query.ObjectType_OBJECT_CAST:            "CAST",
	pg_query.ObjectType_OBJECT_COLLATION:       "COLLATION",
	pg_query.ObjectType_OBJECT_CONVERSION:      "CONVERSION",
	pg_query.ObjectType_OBJECT_DATABASE:        "DATABASE",
	pg_query.ObjectType_OBJECT_DOMAIN:          "DOMAIN",
	pg_query.ObjectType_OBJECT_EVENT_TRIGGER:   "EVENT TRIGGER",
	pg_query.ObjectType_OBJECT_EXTENSION:       "EXTENSION",
	pg_query.ObjectType_OBJECT_FDW:             "FOREIGN DATA WRAPPER",
	pg_query.ObjectType_OBJECT_FOREIGN_SERVER:  "SERVER",
	pg_query.ObjectType_OBJECT_FOREIGN_TABLE:   "FOREIGN TABLE",
	pg_query.ObjectType_OBJECT_FUNCTION:        "FUNCTION",
	pg_query.ObjectType_OBJECT_INDEX:           "INDEX",
	pg_query.ObjectType_OBJECT_LANGUAGE:        "LANGUAGE",
	pg_query.ObjectType_OBJECT_LARGEOBJECT:     "LARGE OBJECT",
	pg_query.ObjectType_OBJECT_MATVIEW:         "MATERIALIZED VIEW",
	pg_query.ObjectType_OBJECT_OPCLASS:         "OPERATOR CLASS",
	pg_query.ObjectType_OBJECT_OPERATOR:        "OPERATOR",
	pg_query.ObjectType_OBJECT_OPFAMILY:        "OPERATOR FAMILY",
	pg_query.ObjectType_OBJECT_POLICY:          "POLICY",
	pg_query.ObjectType_OBJECT_PROCEDURE:       "PROCEDURE",
	pg_query.ObjectType_OBJECT_PUBLICATION:     "PUBLICATION",
	pg_query.ObjectType_OBJECT_ROLE:            "ROLE",
	pg_query.ObjectType_OBJECT_ROUTINE:         "ROUTINE",
	pg_query.ObjectType_OBJECT_RULE:            "RULE",
	pg_query.ObjectType_OBJECT_SCHEMA:          "SCHEMA",
	pg_query.ObjectType_OBJECT_SEQUENCE:        "SEQUENCE",
	pg_query.ObjectType_OBJECT_STATISTIC_EXT:   "STATISTICS",
	pg_query.ObjectType_OBJECT_SUBSCRIPTION:    "SUBSCRIPTION",
	pg_query.ObjectType_OBJECT_TABLE:           "TABLE",
	pg_query.ObjectType_OBJECT_TABLESPACE:      "TABLESPACE",
	pg_query.ObjectType_OBJECT_TRANSFORM:       "TRANSFORM",
	pg_query.ObjectType_OBJECT_TRIGGER:         "TRIGGER",
	pg_query.ObjectType_OBJECT_TSCONFIGURATION: "TEXT SEARCH CONFIGURATION",
	pg_query.ObjectType_OBJECT_TSDICTIONARY:    "TEXT SEARCH DICTIONARY",
	pg_query.ObjectType_OBJECT_TSPARSER:        "TEXT SEARCH PARSER",
	pg_query.ObjectType_OBJECT_TSTEMPLATE:      "TEXT SEARCH TEMPLATE",
	pg_query.ObjectType_OBJECT_TYPE:            "TYPE",
	pg_query.ObjectType_OBJECT_VIEW:            "VIEW",
}

// Which object types each tag family covers (as in CreateCommandTag and
// AlterObjectTypeCommandTag); others are "???".
var (
	dropNouns = objectSet(
		pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_SEQUENCE, pg_query.ObjectType_OBJECT_VIEW,
		pg_query.ObjectType_OBJECT_MATVIEW, pg_query.ObjectType_OBJECT_INDEX, pg_query.ObjectType_OBJECT_TYPE,
		pg_query.ObjectType_OBJECT_DOMAIN, pg_query.ObjectType_OBJECT_COLLATION, pg_query.ObjectType_OBJECT_CONVERSION,
		pg_query.ObjectType_OBJECT_SCHEMA, pg_query.ObjectType_OBJECT_TSPARSER, pg_query.ObjectType_OBJECT_TSDICTIONARY,
		pg_query.ObjectType_OBJECT_TSTEMPLATE, pg_query.ObjectType_OBJECT_TSCONFIGURATION,
		pg_query.ObjectType_OBJECT_FOREIGN_TABLE, pg_query.ObjectType_OBJECT_EXTENSION,
		pg_query.ObjectType_OBJECT_FUNCTION, pg_query.ObjectType_OBJECT_PROCEDURE, pg_query.ObjectType_OBJECT_ROUTINE,
		pg_query.ObjectType_OBJECT_AGGREGATE, pg_query.ObjectType_OBJECT_OPERATOR, pg_query.ObjectType_OBJECT_LANGUAGE,
		pg_query.ObjectType_OBJECT_CAST, pg_query.ObjectType_OBJECT_TRIGGER, pg_query.ObjectType_OBJECT_EVENT_TRIGGER,
		pg_query.ObjectType_OBJECT_RULE, pg_query.ObjectType_OBJECT_FDW, pg_query.ObjectType_OBJECT_FOREIGN_SERVER,
		pg_query.ObjectType_OBJECT_OPCLASS, pg_query.ObjectType_OBJECT_OPFAMILY, pg_query.ObjectType_OBJECT_POLICY,
		pg_query.ObjectType_OBJECT_TRANSFORM, pg_query.ObjectType_OBJECT_ACCESS_METHOD,
		pg_query.ObjectType_OBJECT_PUBLICATION, pg_query.ObjectType_OBJECT_STATISTIC_EXT,
	)
	alterNouns = objectSet(
		pg_query.ObjectType_OBJECT_AGGREGATE, pg_query.ObjectType_OBJECT_CAST, pg_query.ObjectType_OBJECT_COLLATION,
		pg_query.ObjectType_OBJECT_CONVERSION, pg_query.ObjectType_OBJECT_DATABASE, pg_query.ObjectType_OBJECT_DOMAIN,
		pg_query.ObjectType_OBJECT_EXTENSION, pg_query.ObjectType_OBJECT_FDW, pg_query.ObjectType_OBJECT_FOREIGN_SERVER,
		pg_query.ObjectType_OBJECT_FOREIGN_TABLE, pg_query.ObjectType_OBJECT_FUNCTION, pg_query.ObjectType_OBJECT_INDEX,
		pg_query.ObjectType_OBJECT_LANGUAGE, pg_query.ObjectType_OBJECT_LARGEOBJECT, pg_query.ObjectType_OBJECT_OPCLASS,
		pg_query.ObjectType_OBJECT_OPERATOR, pg_query.ObjectType_OBJECT_OPFAMILY, pg_query.ObjectType_OBJECT_POLICY,
		pg_query.ObjectType_OBJECT_PROCEDURE, pg_query.ObjectType_OBJECT_ROLE, pg_query.ObjectType_OBJECT_ROUTINE,
		pg_query.ObjectType_OBJECT_RULE, pg_query.ObjectType_OBJECT_SCHEMA, pg_query.ObjectType_OBJECT_SEQUENCE,
		pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_TABLESPACE, pg_query.ObjectType_OBJECT_TRIGGER,
		pg_query.ObjectType_OBJECT_EVENT_TRIGGER, pg_query.ObjectType_OBJECT_TSCONFIGURATION,
		pg_query.ObjectType_OBJECT_TSDICTIONARY, pg_query.ObjectType_OBJECT_TSPARSER,
		pg_query.ObjectType_OBJECT_TSTEMPLATE, pg_query.ObjectType_OBJECT_TYPE, pg_query.ObjectType_OBJECT_VIEW,
		pg_query.ObjectType_OBJECT_MATVIEW, pg_query.ObjectType_OBJECT_PUBLICATION,
		pg_query.ObjectType_OBJECT_SUBSCRIPTION, pg_query.ObjectType_OBJECT_STATISTIC_EXT,
	)
	defineNouns = objectSet(
		pg_query.ObjectType_OBJECT_AGGREGATE, pg_query.ObjectType_OBJECT_OPERATOR, pg_query.ObjectType_OBJECT_TYPE,
		pg_query.ObjectType_OBJECT_TSPARSER, pg_query.ObjectType_OBJECT_TSDICTIONARY,
		pg_query.ObjectType_OBJECT_TSTEMPLATE, pg_query.ObjectType_OBJECT_TSCONFIGURATION,
		pg_query.ObjectType_OBJECT_COLLATION, pg_query.ObjectType_OBJECT_ACCESS_METHOD,
	)
)

func objectSet(ts ...pg_query.ObjectType) map[pg_query.ObjectType]bool {
	m := make(map[pg_query.ObjectType]bool, len(ts))
	for _, t := range ts {
		m[t] = true
	}
	return m
}

func prefixed(verb string, allowed map[pg_query.ObjectType]bool, t pg_query.ObjectType) string {
	if !allowed[t] {
		return unknownTag
	}
	return verb + nouns[t]
}

// alterTag is AlterObjectTypeCommandTag.
func alterTag(t pg_query.ObjectType) string {
	switch t {
	case pg_query.ObjectType_OBJECT_ATTRIBUTE:
		return "ALTER TYPE"
	case pg_query.ObjectType_OBJECT_COLUMN, pg_query.ObjectType_OBJECT_TABCONSTRAINT:
		return "ALTER TABLE"
	case pg_query.ObjectType_OBJECT_DOMCONSTRAINT:
		return "ALTER DOMAIN"
	}
	return prefixed("ALTER ", alterNouns, t)
}
