//! Parses Runnel's SQL, which is Flink SQL's dialect: scripts of `;`-separated statements,
//! Flink's `CREATE TABLE` (computed columns, `WATERMARK FOR`, `ROW<...>`, `WITH (...)`),
//! and the table-valued window functions `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))`.
//!
//! Everything but `CREATE TABLE` is handed to sqlparser (the version bundled with
//! DataFusion); `CREATE TABLE` is parsed here over sqlparser's tokens, because its Flink
//! form (types such as `ROW<a INT>` whose `>>` must be split, computed columns, watermark
//! clauses) is outside what sqlparser accepts.

use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Query, SetExpr, Statement as SqlStatement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::{Result, SqlError};

mod ddl;

use ddl::DdlParser;

/// Time zone given to `TIMESTAMP_LTZ` columns: their instants are absolute, shown in UTC.
pub const LTZ_TIME_ZONE: &str = "UTC";

/// One statement of a Runnel script.
#[derive(Debug, Clone)]
pub enum Statement {
    /// `CREATE TABLE name (...) WITH (...)`.
    CreateTable(Box<CreateTable>),
    /// `CREATE VIEW name AS query`.
    CreateView { name: String, query: Box<Query> },
    /// `INSERT INTO table query`: a continuous job writing into `table`.
    Insert { table: String, query: Box<Query> },
    /// A bare query whose rows go to the caller.
    Query(Box<Query>),
    /// `SET 'key' = 'value'`: a job option.
    Set { key: String, value: String },
    /// `CREATE [TEMPORARY [SYSTEM]] FUNCTION name AS 'class'` (Flink's catalog function).
    CreateFunction { name: String, class: String },
    /// `EXPLAIN [PLAN FOR] statement`: the streaming plan of a query or an `INSERT INTO`
    /// (always one of those two), without running it.
    Explain(Box<Statement>),
}

/// A parsed (not yet resolved) `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct CreateTable {
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnSpec>,
    pub watermark: Option<WatermarkSpec>,
    pub primary_key: Vec<String>,
    /// `PARTITIONED BY (col, ...)`: a file sink writes each row under `col=value/` folders.
    pub partition_keys: Vec<String>,
    /// The `WITH` options in the order written.
    pub options: Vec<(String, String)>,
}

/// One column of a `CREATE TABLE`.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    pub kind: ColumnKind,
}

/// Whether a column is read from the source's records, from what the connector or format
/// knows about each record, or computed from other columns.
#[derive(Debug, Clone)]
pub enum ColumnKind {
    /// Read from the source's records.
    Physical { data_type: DataType, nullable: bool },
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`: what the connector or format knows of
    /// each record (Kafka's `offset`, Debezium's `value.source.timestamp`, ...); `key`
    /// defaults to the column's name. A `VIRTUAL` one is read-only.
    Metadata {
        data_type: DataType,
        key: Option<String>,
        is_virtual: bool,
    },
    /// `name AS expr`: computed from the physical columns of the same row.
    Computed(Box<SqlExpr>),
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    pub column: String,
    pub expr: SqlExpr,
}

/// Parses a script of statements separated by `;`; stops at the first error.
pub fn parse_script(sql: &str) -> Result<Vec<Statement>> {
    parse_script_each(sql)?
        .into_iter()
        .map(|located| located.statement)
        .collect()
}

/// One statement of a script, parsed or not, with the line it starts on (from 1).
#[derive(Debug)]
pub struct LocatedStatement {
    pub line: u64,
    pub statement: Result<Statement>,
}

/// Parses each statement of a script on its own, so a syntax error in one leaves the
/// others parsed. Fails as a whole only when the text cannot be split into statements
/// (e.g. an unterminated string).
pub fn parse_script_each(sql: &str) -> Result<Vec<LocatedStatement>> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::Syntax {
            message: e.message,
            line: e.location.line,
            column: e.location.column,
        })?;
    Ok(split_statements(tokens)
        .into_iter()
        .map(|chunk| LocatedStatement {
            line: chunk.first().map_or(0, |t| t.span.start.line),
            statement: parse_statement(chunk),
        })
        .collect())
}

/// Splits tokens at top-level semicolons, dropping empty statements and comments.
fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut depth = 0i32;
    for token in tokens {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::SemiColon if depth <= 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(token);
    }
    out.push(current);
    out.into_iter()
        .map(|chunk| {
            chunk
                .into_iter()
                .filter(|t| !matches!(t.token, Token::Whitespace(_)))
                .collect::<Vec<_>>()
        })
        .filter(|chunk| !chunk.iter().all(|t| t.token == Token::EOF))
        .collect()
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// `CREATE [TEMPORARY [SYSTEM]] FUNCTION [IF NOT EXISTS] name AS 'class' [LANGUAGE x]`;
/// `None` if the tokens are not a CREATE FUNCTION.
fn parse_create_function(tokens: &[TokenWithSpan]) -> Option<Result<Statement>> {
    let mut words = tokens.iter().map(|t| &t.token).peekable();
    if !words.next().is_some_and(|t| is_word(t, "CREATE")) {
        return None;
    }
    while words
        .peek()
        .is_some_and(|t| is_word(t, "TEMPORARY") || is_word(t, "SYSTEM"))
    {
        words.next();
    }
    if !words.next().is_some_and(|t| is_word(t, "FUNCTION")) {
        return None;
    }
    let (line, column) = tokens
        .first()
        .map_or((0, 0), |t| (t.span.start.line, t.span.start.column));
    let bad = || {
        Some(Err(SqlError::Syntax {
            message: "expected CREATE FUNCTION name AS 'class'".into(),
            line,
            column,
        }))
    };
    let mut rest: Vec<&Token> = words.filter(|t| **t != Token::EOF).collect();
    if rest.len() >= 3
        && is_word(rest[0], "IF")
        && is_word(rest[1], "NOT")
        && is_word(rest[2], "EXISTS")
    {
        rest.drain(..3);
    }
    match rest.as_slice() {
        [Token::Word(name), as_, Token::SingleQuotedString(class), ..] if is_word(as_, "AS") => {
            Some(Ok(Statement::CreateFunction {
                name: name.value.clone(),
                class: class.clone(),
            }))
        }
        _ => bad(),
    }
}

fn parse_statement(tokens: Vec<TokenWithSpan>) -> Result<Statement> {
    if let Some(statement) = parse_create_function(&tokens) {
        return statement;
    }
    // Flink's `EXPLAIN PLAN FOR x` is `EXPLAIN x`.
    if let [explain, plan, for_, rest @ ..] = tokens.as_slice() {
        if is_word(&explain.token, "EXPLAIN")
            && is_word(&plan.token, "PLAN")
            && is_word(&for_.token, "FOR")
        {
            let mut tokens = vec![explain.clone()];
            tokens.extend(rest.iter().cloned());
            return parse_statement(tokens);
        }
    }
    let starts_create_table = {
        let words: Vec<&Token> = tokens.iter().take(3).map(|t| &t.token).collect();
        matches!(words.as_slice(), [c, t, ..] if is_word(c, "CREATE") && is_word(t, "TABLE"))
            || matches!(words.as_slice(), [c, tmp, t] if is_word(c, "CREATE")
                && is_word(tmp, "TEMPORARY") && is_word(t, "TABLE"))
    };
    if starts_create_table {
        return DdlParser::new(tokens)
            .parse_create_table()
            .map(|t| Statement::CreateTable(Box::new(t)));
    }
    let tokens = rewrite_lookup_tables(rewrite_window_table_functions(tokens));
    let end = tokens.last().map(|t| t.span.end);
    let mut parser = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens);
    let statement = parser
        .parse_statement()
        .map_err(|e| match SqlError::from_parser(e) {
            // sqlparser gives no place for "found: EOF": the statement ended too early.
            SqlError::Syntax {
                message, line: 0, ..
            } if end.is_some() => SqlError::Syntax {
                message: message.replace("found: EOF", "found: end of statement"),
                line: end.map(|l| l.line).unwrap_or(0),
                column: end.map(|l| l.column).unwrap_or(0),
            },
            other => other,
        })?;
    // One statement per chunk: anything after it is an error, not silently dropped.
    if parser.peek_token().token != Token::EOF {
        let next = parser.peek_token();
        return Err(SqlError::Syntax {
            message: format!("expected end of statement, found {}", next.token),
            line: next.span.start.line,
            column: next.span.start.column,
        });
    }
    convert_statement(statement)
}

fn convert_statement(statement: SqlStatement) -> Result<Statement> {
    match statement {
        SqlStatement::Query(query) => Ok(Statement::Query(query)),
        SqlStatement::Insert(insert) => {
            let table = insert.table.to_string();
            let table = unquote_name(&table);
            let query = insert.source.ok_or_else(|| {
                SqlError::Plan(format!(
                    "INSERT INTO {table} needs a query (INSERT INTO t SELECT ...)"
                ))
            })?;
            if !insert.columns.is_empty() {
                return Err(SqlError::Plan(format!(
                    "INSERT INTO {table} with a column list is not supported; select the columns in the sink's order instead"
                )));
            }
            Ok(Statement::Insert { table, query })
        }
        SqlStatement::CreateView(view) => Ok(Statement::CreateView {
            name: unquote_name(&view.name.to_string()),
            query: view.query,
        }),
        SqlStatement::Set(set) => convert_set(set),
        SqlStatement::Explain {
            statement,
            analyze: false,
            ..
        } => match convert_statement(*statement)? {
            explained @ (Statement::Query(_) | Statement::Insert { .. }) => {
                Ok(Statement::Explain(Box::new(explained)))
            }
            _ => Err(SqlError::Plan(
                "EXPLAIN takes a SELECT or an INSERT INTO".into(),
            )),
        },
        other => Err(SqlError::Plan(format!(
            "statement kind not supported: {}",
            other
                .to_string()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ))),
    }
}

fn convert_set(set: datafusion::sql::sqlparser::ast::Set) -> Result<Statement> {
    use datafusion::sql::sqlparser::ast::{Set, Value};
    if let Set::SingleAssignment {
        variable, values, ..
    } = &set
    {
        let key = variable
            .0
            .iter()
            .map(|part| part.as_ident().map(|i| i.value.clone()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(".");
        if let [SqlExpr::Value(v)] = values.as_slice() {
            let value = match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            };
            return Ok(Statement::Set { key, value });
        }
    }
    Err(SqlError::Plan(format!(
        "SET takes one key and one value: SET 'key' = 'value' (found: {set})"
    )))
}

/// `a.b` or `` `a` `` to the plain name the catalog keys tables by.
fn unquote_name(name: &str) -> String {
    name.trim_matches(|c| c == '`' || c == '"').to_string()
}

/// Makes Flink's window table functions parseable by sqlparser:
/// `TABLE(TUMBLE(TABLE t, ...))` becomes `TABLE(TUMBLE(t, ...))`, and a session's
/// `SESSION(TABLE t PARTITION BY k, ...)` (or `PARTITION BY (k1, k2)`) becomes
/// `SESSION(t, PARTITION_KEYS(k), ...)`. The window planner then reads the first argument
/// as a table.
fn rewrite_window_table_functions(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let is_window_call = i + 3 < tokens.len()
            && matches!(&tokens[i].token, Token::Word(w)
                if w.quote_style.is_none() && crate::window::WindowKind::is_window_function(&w.value))
            && tokens[i + 1].token == Token::LParen
            && is_word(&tokens[i + 2].token, "TABLE");
        if !is_window_call {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        out.push(tokens[i].clone());
        out.push(tokens[i + 1].clone());
        i += 3; // drop the inner TABLE keyword
                // The table name runs to the first comma, closing parenthesis or PARTITION.
        while i < tokens.len()
            && !matches!(tokens[i].token, Token::Comma | Token::RParen)
            && !is_word(&tokens[i].token, "PARTITION")
        {
            out.push(tokens[i].clone());
            i += 1;
        }
        if i < tokens.len() && is_word(&tokens[i].token, "PARTITION") {
            i = rewrite_partition_by(&tokens, i, &mut out);
        }
    }
    out
}

/// The schema a table is read from when it is joined `FOR SYSTEM_TIME AS OF`, followed by
/// `:` and the time expression's text: the planner joins stream rows with the table's
/// version at that time (a temporal join of a versioned table on the stream's event
/// time), or with the table read whole (a lookup join).
pub const LOOKUP_SCHEMA: &str = "__lookup";

/// Rewrites `t FOR SYSTEM_TIME AS OF expr [AS alias]` (which sqlparser's generic dialect
/// does not parse) into `"__lookup:expr".t AS alias` (alias `t` when none is given).
fn rewrite_lookup_tables(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let is_lookup = i + 3 < tokens.len()
            && is_word(&tokens[i].token, "FOR")
            && is_word(&tokens[i + 1].token, "SYSTEM_TIME")
            && is_word(&tokens[i + 2].token, "AS")
            && is_word(&tokens[i + 3].token, "OF")
            && matches!(out.last().map(|t| &t.token), Some(Token::Word(_)));
        if !is_lookup {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let Some(name) = out.pop() else { break };
        let span = name.span;
        let token = |token: Token| TokenWithSpan { token, span };
        // The time expression runs to the alias or the end of the table factor.
        i += 4;
        let from = i;
        let mut depth = 0usize;
        while i < tokens.len() {
            match &tokens[i].token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                Token::Comma | Token::EOF if depth == 0 => break,
                Token::Word(w)
                    if depth == 0
                        && w.quote_style.is_none()
                        && [
                            "AS", "ON", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "WHERE",
                            "GROUP", "UNION", "USING",
                        ]
                        .iter()
                        .any(|k| w.value.eq_ignore_ascii_case(k)) =>
                {
                    break
                }
                _ => {}
            }
            i += 1;
        }
        let time: String = tokens[from..i]
            .iter()
            .map(|t| t.token.to_string())
            .collect();
        out.push(token(Token::make_word(
            &format!("{LOOKUP_SCHEMA}:{}", time.trim()),
            Some('"'),
        )));
        out.push(token(Token::Period));
        out.push(name.clone());
        if !tokens.get(i).is_some_and(|t| is_word(&t.token, "AS")) {
            out.push(token(Token::make_keyword("AS")));
            out.push(name);
        }
    }
    out
}

/// Rewrites `PARTITION BY k` / `PARTITION BY (k1, k2)` starting at `tokens[i]` into
/// `, PARTITION_KEYS(...)`; returns the index after it.
fn rewrite_partition_by(
    tokens: &[TokenWithSpan],
    mut i: usize,
    out: &mut Vec<TokenWithSpan>,
) -> usize {
    let span = tokens[i].span;
    let token = |token: Token| TokenWithSpan { token, span };
    i += 1;
    while i < tokens.len() && matches!(tokens[i].token, Token::Whitespace(_)) {
        i += 1;
    }
    if i < tokens.len() && is_word(&tokens[i].token, "BY") {
        i += 1;
    }
    while i < tokens.len() && matches!(tokens[i].token, Token::Whitespace(_)) {
        i += 1;
    }
    out.push(token(Token::Comma));
    out.push(token(Token::make_word("PARTITION_KEYS", None)));
    out.push(token(Token::LParen));
    let parenthesized = i < tokens.len() && tokens[i].token == Token::LParen;
    if parenthesized {
        i += 1;
    }
    let mut depth = 0usize;
    while i < tokens.len() {
        match tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => {
                if parenthesized {
                    i += 1; // the list's own closing parenthesis
                }
                break;
            }
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 && !parenthesized => break,
            _ => {}
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out.push(token(Token::RParen));
    i
}

/// Whether a query is a plain `SELECT` (used to give better errors).
pub fn is_select(query: &Query) -> bool {
    matches!(query.body.as_ref(), SetExpr::Select(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::TimeUnit;

    #[test]
    fn parses_explain_of_a_query_or_an_insert() {
        let statements = parse_script(
            "EXPLAIN SELECT a FROM t; EXPLAIN PLAN FOR INSERT INTO s SELECT a FROM t;",
        )
        .unwrap();
        assert!(
            matches!(&statements[0], Statement::Explain(e) if matches!(**e, Statement::Query(_)))
        );
        assert!(matches!(
            &statements[1],
            Statement::Explain(e) if matches!(&**e, Statement::Insert { table, .. } if table == "s")
        ));
        let err = parse_script("EXPLAIN CREATE VIEW v AS SELECT 1;").unwrap_err();
        assert!(
            err.to_string()
                .contains("EXPLAIN takes a SELECT or an INSERT INTO"),
            "{err}"
        );
    }

    #[test]
    fn parses_flink_create_table() {
        let sql = "CREATE TABLE `claims` (
            claim_id STRING NOT NULL,
            policy_id BIGINT,
            amount DECIMAL(12, 2),
            address ROW<city STRING, geo ROW<lat DOUBLE, lon DOUBLE>>,
            event_time TIMESTAMP(3),
            seen TIMESTAMP_LTZ(3),
            day_of AS CAST(event_time AS DATE),
            WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND,
            PRIMARY KEY (claim_id) NOT ENFORCED
        ) WITH ('connector' = 'kafka', 'topic' = 'claims.events');";
        let statements = parse_script(sql).unwrap();
        let Statement::CreateTable(t) = &statements[0] else {
            panic!("not a table")
        };
        assert_eq!(t.name, "claims");
        assert_eq!(t.columns.len(), 7);
        assert!(matches!(
            &t.columns[0].kind,
            ColumnKind::Physical {
                nullable: false,
                ..
            }
        ));
        let ColumnKind::Physical { data_type, .. } = &t.columns[3].kind else {
            panic!()
        };
        let DataType::Struct(fields) = data_type else {
            panic!("not a struct")
        };
        assert!(matches!(fields[1].data_type(), DataType::Struct(inner) if inner.len() == 2));
        assert!(matches!(
            &t.columns[5].kind,
            ColumnKind::Physical {
                data_type: DataType::Timestamp(TimeUnit::Millisecond, Some(_)),
                ..
            }
        ));
        assert!(matches!(&t.columns[6].kind, ColumnKind::Computed(_)));
        assert_eq!(t.watermark.as_ref().unwrap().column, "event_time");
        assert_eq!(t.primary_key, vec!["claim_id"]);
        assert_eq!(
            t.options[1],
            ("topic".to_string(), "claims.events".to_string())
        );
    }

    #[test]
    fn splits_a_script_and_rewrites_window_tvf() {
        let sql = "SET 'parallelism.default' = '1';
            CREATE VIEW v AS SELECT * FROM t;
            INSERT INTO s SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), INTERVAL '5' MINUTES));
            -- a comment
            SELECT 1;";
        let statements = parse_script(sql).unwrap();
        assert_eq!(statements.len(), 4);
        assert!(
            matches!(&statements[0], Statement::Set { key, value } if key == "parallelism.default" && value == "1")
        );
        assert!(matches!(&statements[2], Statement::Insert { table, .. } if table == "s"));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = parse_script("SELECT a\nFROM t WHERE").unwrap_err();
        assert!(matches!(err, SqlError::Syntax { line: 2, .. }), "{err}");
        let err = parse_script("CREATE TABLE t (\n  a INTEGR\n) WITH ()").unwrap_err();
        match err {
            SqlError::Syntax {
                line,
                column,
                message,
            } => {
                assert_eq!((line, column), (2, 5));
                assert!(message.contains("unknown data type INTEGR"), "{message}");
            }
            other => panic!("{other}"),
        }
    }
}

#[cfg(test)]
mod lookup_rewrite_tests {
    use super::*;

    #[test]
    fn for_system_time_as_of_reads_the_lookup_schema() {
        let statements = parse_script(
            "SELECT * FROM s JOIN t FOR SYSTEM_TIME AS OF s.p AS x ON s.k = x.k;
             SELECT * FROM s LEFT JOIN t FOR SYSTEM_TIME AS OF s.p ON s.k = t.k;
             SELECT B.a, S.`value` FROM (SELECT *, PROCTIME() as p FROM s) B
             JOIN side_input FOR SYSTEM_TIME AS OF B.p AS S ON mod(B.a, 10) = S.key",
        )
        .unwrap();
        let text: Vec<String> = statements
            .iter()
            .map(|s| match s {
                Statement::Query(q) => q.to_string(),
                _ => String::new(),
            })
            .collect();
        assert!(
            text[0].contains(r#"JOIN "__lookup:s.p".t AS x ON"#),
            "{}",
            text[0]
        );
        assert!(
            text[1].contains(r#"JOIN "__lookup:s.p".t AS t ON"#),
            "{}",
            text[1]
        );
        assert!(
            text[2].contains(r#"JOIN "__lookup:B.p".side_input AS S ON"#),
            "{}",
            text[2]
        );
    }
}
