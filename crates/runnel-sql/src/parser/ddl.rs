//! Flink's `CREATE TABLE`, parsed over sqlparser's tokens: column types with nested
//! `ROW<...>`, computed columns, metadata columns, `WATERMARK FOR`, `PRIMARY KEY`,
//! `PARTITIONED BY` and the `WITH` options — the parts of Flink's DDL outside
//! sqlparser's dialects.

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::sql::sqlparser::ast::Expr as SqlExpr;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{Result, SqlError};

use super::*;

/// A small recursive-descent parser over tokens for Flink's `CREATE TABLE`.
pub(super) struct DdlParser {
    tokens: Vec<TokenWithSpan>,
    pos: usize,
    table: String,
}

impl DdlParser {
    pub(super) fn new(tokens: Vec<TokenWithSpan>) -> Self {
        Self {
            tokens,
            pos: 0,
            table: String::new(),
        }
    }

    fn peek(&self) -> &Token {
        self.tokens
            .get(self.pos)
            .map(|t| &t.token)
            .unwrap_or(&Token::EOF)
    }

    fn peek_at(&self, n: usize) -> &Token {
        self.tokens
            .get(self.pos + n)
            .map(|t| &t.token)
            .unwrap_or(&Token::EOF)
    }

    fn error(&self, message: impl Into<String>) -> SqlError {
        let location = self
            .tokens
            .get(self.pos.min(self.tokens.len().saturating_sub(1)))
            .map(|t| t.span.start)
            .unwrap_or(datafusion::sql::sqlparser::tokenizer::Location { line: 0, column: 0 });
        SqlError::Syntax {
            message: if self.table.is_empty() {
                message.into()
            } else {
                format!("in CREATE TABLE {}: {}", self.table, message.into())
            },
            line: location.line,
            column: location.column,
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Token::EOF => "end of statement".to_string(),
            t => format!("'{t}'"),
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if is_word(self.peek(), word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<()> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.error(format!("expected {word}, found {}", self.found())))
        }
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek() == token {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: Token) -> Result<()> {
        if self.eat(&token) {
            Ok(())
        } else {
            Err(self.error(format!("expected '{token}', found {}", self.found())))
        }
    }

    /// Consumes a `>`, splitting a `>>` (as in `ROW<a ROW<b INT>>`) into two.
    fn expect_gt(&mut self) -> Result<()> {
        match self.peek() {
            Token::Gt => {
                self.pos += 1;
                Ok(())
            }
            Token::ShiftRight => {
                self.tokens[self.pos].token = Token::Gt;
                Ok(())
            }
            _ => Err(self.error(format!("expected '>', found {}", self.found()))),
        }
    }

    fn identifier(&mut self) -> Result<String> {
        match self.peek().clone() {
            Token::Word(w) => {
                self.pos += 1;
                Ok(w.value)
            }
            _ => Err(self.error(format!("expected a name, found {}", self.found()))),
        }
    }

    /// A possibly dotted name; the catalog keys tables by the last part.
    fn object_name(&mut self) -> Result<String> {
        let mut name = self.identifier()?;
        while self.eat(&Token::Period) {
            name = self.identifier()?;
        }
        Ok(name)
    }

    fn string_literal(&mut self) -> Result<String> {
        match self.peek().clone() {
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(format!("expected a quoted string, found {}", self.found()))),
        }
    }

    fn number(&mut self) -> Result<u64> {
        match self.peek().clone() {
            Token::Number(n, _) => {
                let value = n
                    .parse::<u64>()
                    .map_err(|_| self.error(format!("expected a whole number, found {n}")))?;
                self.pos += 1;
                Ok(value)
            }
            _ => Err(self.error(format!("expected a number, found {}", self.found()))),
        }
    }

    pub(super) fn parse_create_table(mut self) -> Result<CreateTable> {
        self.expect_word("CREATE")?;
        self.eat_word("TEMPORARY");
        self.expect_word("TABLE")?;
        let if_not_exists = if self.eat_word("IF") {
            self.expect_word("NOT")?;
            self.expect_word("EXISTS")?;
            true
        } else {
            false
        };
        let name = self.object_name()?;
        self.table = name.clone();
        let mut table = CreateTable {
            name,
            if_not_exists,
            columns: Vec::new(),
            watermark: None,
            primary_key: Vec::new(),
            partition_keys: Vec::new(),
            options: Vec::new(),
        };
        self.expect(Token::LParen)?;
        loop {
            self.parse_table_element(&mut table)?;
            if self.eat(&Token::Comma) {
                continue;
            }
            self.expect(Token::RParen)?;
            break;
        }
        if self.eat_word("COMMENT") {
            self.string_literal()?;
        }
        if self.eat_word("PARTITIONED") {
            self.expect_word("BY")?;
            self.expect(Token::LParen)?;
            loop {
                table.partition_keys.push(self.identifier()?);
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
            self.expect(Token::RParen)?;
        }
        if self.eat_word("WITH") {
            self.expect(Token::LParen)?;
            if !self.eat(&Token::RParen) {
                loop {
                    let key = self.string_literal()?;
                    self.expect(Token::Eq)?;
                    let value = self.string_literal()?;
                    if table.options.iter().any(|(k, _)| *k == key) {
                        return Err(self.error(format!("option '{key}' is given twice")));
                    }
                    table.options.push((key, value));
                    if self.eat(&Token::Comma) {
                        continue;
                    }
                    self.expect(Token::RParen)?;
                    break;
                }
            }
        }
        if *self.peek() != Token::EOF {
            return Err(self.error(format!(
                "unexpected {} after the table definition",
                self.found()
            )));
        }
        Ok(table)
    }

    fn parse_table_element(&mut self, table: &mut CreateTable) -> Result<()> {
        if is_word(self.peek(), "WATERMARK") && is_word(self.peek_at(1), "FOR") {
            self.pos += 2;
            let column = self.identifier()?;
            self.expect_word("AS")?;
            let expr = self.expression()?;
            if table.watermark.is_some() {
                return Err(self.error("a table has at most one WATERMARK clause"));
            }
            table.watermark = Some(WatermarkSpec { column, expr });
            return Ok(());
        }
        if is_word(self.peek(), "CONSTRAINT") {
            self.pos += 1;
            self.identifier()?;
        }
        if is_word(self.peek(), "PRIMARY") && is_word(self.peek_at(1), "KEY") {
            self.pos += 2;
            self.expect(Token::LParen)?;
            loop {
                table.primary_key.push(self.identifier()?);
                if !self.eat(&Token::Comma) {
                    break;
                }
            }
            self.expect(Token::RParen)?;
            self.expect_word("NOT")?;
            self.expect_word("ENFORCED")?;
            return Ok(());
        }
        let name = self.identifier()?;
        if table.columns.iter().any(|c| c.name == name) {
            return Err(self.error(format!("column '{name}' is declared twice")));
        }
        let kind = if self.eat_word("AS") {
            ColumnKind::Computed(Box::new(self.expression()?))
        } else {
            let data_type = self.data_type()?;
            let mut nullable = true;
            if self.eat_word("NOT") {
                self.expect_word("NULL")?;
                nullable = false;
            } else {
                self.eat_word("NULL");
            }
            if self.eat_word("METADATA") {
                let key = if self.eat_word("FROM") {
                    Some(self.string_literal()?)
                } else {
                    None
                };
                ColumnKind::Metadata {
                    data_type,
                    key,
                    is_virtual: self.eat_word("VIRTUAL"),
                }
            } else {
                ColumnKind::Physical {
                    data_type,
                    nullable,
                }
            }
        };
        if self.eat_word("COMMENT") {
            self.string_literal()?;
        }
        table.columns.push(ColumnSpec { name, kind });
        Ok(())
    }

    /// Collects the tokens of one expression (up to a top-level `,` or `)`) and hands
    /// them to sqlparser.
    fn expression(&mut self) -> Result<SqlExpr> {
        let start = self.pos;
        let mut depth = 0i32;
        while self.pos < self.tokens.len() {
            match self.peek() {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => break,
                Token::Word(w) if depth == 0 && w.keyword == Keyword::COMMENT => break,
                Token::EOF => break,
                _ => {}
            }
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.error(format!("expected an expression, found {}", self.found())));
        }
        let tokens = self.tokens[start..self.pos].to_vec();
        let mut parser = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens);
        let expr = parser.parse_expr().map_err(SqlError::from_parser)?;
        if parser.peek_token().token != Token::EOF {
            return Err(self.error(format!(
                "unexpected '{}' in expression",
                parser.peek_token().token
            )));
        }
        Ok(expr)
    }

    fn optional_precision(&mut self) -> Result<Option<u64>> {
        if self.eat(&Token::LParen) {
            let n = self.number()?;
            self.expect(Token::RParen)?;
            Ok(Some(n))
        } else {
            Ok(None)
        }
    }

    fn time_unit(precision: Option<u64>) -> TimeUnit {
        match precision.unwrap_or(3) {
            0..=3 => TimeUnit::Millisecond,
            4..=6 => TimeUnit::Microsecond,
            _ => TimeUnit::Nanosecond,
        }
    }

    /// Flink SQL data types mapped to Arrow.
    fn data_type(&mut self) -> Result<DataType> {
        let word = match self.peek().clone() {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            _ => return Err(self.error(format!("expected a data type, found {}", self.found()))),
        };
        self.pos += 1;
        let data_type = match word.as_str() {
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TINYINT" => DataType::Int8,
            "SMALLINT" => DataType::Int16,
            "INT" | "INTEGER" => DataType::Int32,
            "BIGINT" => DataType::Int64,
            "FLOAT" | "REAL" => DataType::Float32,
            "DOUBLE" => {
                self.eat_word("PRECISION");
                DataType::Float64
            }
            "DECIMAL" | "DEC" | "NUMERIC" => {
                let (mut precision, mut scale) = (10u64, 0u64);
                if self.eat(&Token::LParen) {
                    precision = self.number()?;
                    if self.eat(&Token::Comma) {
                        scale = self.number()?;
                    }
                    self.expect(Token::RParen)?;
                }
                if !(1..=38).contains(&precision) || scale > precision {
                    return Err(self.error(format!(
                        "DECIMAL({precision}, {scale}) is out of range: precision 1 to 38, scale at most precision"
                    )));
                }
                DataType::Decimal128(precision as u8, scale as i8)
            }
            "STRING" | "TEXT" => DataType::Utf8,
            "VARCHAR" | "CHAR" => {
                self.optional_precision()?;
                DataType::Utf8
            }
            "BYTES" | "VARBINARY" | "BINARY" => {
                self.optional_precision()?;
                DataType::Binary
            }
            "DATE" => DataType::Date32,
            "TIMESTAMP" => {
                let unit = Self::time_unit(self.optional_precision()?);
                if self.eat_word("WITH") {
                    self.expect_word("LOCAL")?;
                    self.expect_word("TIME")?;
                    self.expect_word("ZONE")?;
                    DataType::Timestamp(unit, Some(LTZ_TIME_ZONE.into()))
                } else {
                    if self.eat_word("WITHOUT") {
                        self.expect_word("TIME")?;
                        self.expect_word("ZONE")?;
                    }
                    DataType::Timestamp(unit, None)
                }
            }
            "TIMESTAMP_LTZ" => {
                let unit = Self::time_unit(self.optional_precision()?);
                DataType::Timestamp(unit, Some(LTZ_TIME_ZONE.into()))
            }
            "ROW" => self.row_type()?,
            "ARRAY" => {
                let element = self.single_type_argument()?;
                DataType::new_list(element, true)
            }
            "MAP" => {
                // `MAP<K, V>` (Kafka's `headers` metadata is `MAP<STRING, BYTES>`).
                self.expect(Token::Lt)?;
                let key = self.data_type()?;
                self.expect(Token::Comma)?;
                let value = self.data_type()?;
                self.expect_gt()?;
                let entries = Fields::from(vec![
                    Field::new("key", key, false),
                    Field::new("value", value, true),
                ]);
                DataType::Map(
                    std::sync::Arc::new(Field::new("entries", DataType::Struct(entries), false)),
                    false,
                )
            }
            other => {
                self.pos -= 1;
                return Err(self.error(format!(
                    "unknown data type {other}; supported: BOOLEAN, TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, \
                     DECIMAL(p, s), VARCHAR, STRING, BYTES, DATE, TIMESTAMP(p), TIMESTAMP_LTZ(p), ROW<...>, ARRAY<...>, MAP<K, V>"
                )));
            }
        };
        Ok(data_type)
    }

    /// `<T>` or `(T)` after ARRAY.
    fn single_type_argument(&mut self) -> Result<DataType> {
        if self.eat(&Token::Lt) {
            let t = self.data_type()?;
            self.expect_gt()?;
            Ok(t)
        } else {
            self.expect(Token::LParen)?;
            let t = self.data_type()?;
            self.expect(Token::RParen)?;
            Ok(t)
        }
    }

    /// `ROW<name TYPE, ...>` or `ROW(name TYPE, ...)`.
    fn row_type(&mut self) -> Result<DataType> {
        let angle = if self.eat(&Token::Lt) {
            true
        } else {
            self.expect(Token::LParen)?;
            false
        };
        let mut fields = Vec::new();
        loop {
            let name = self.identifier()?;
            let data_type = self.data_type()?;
            let mut nullable = true;
            if self.eat_word("NOT") {
                self.expect_word("NULL")?;
                nullable = false;
            }
            fields.push(Field::new(name, data_type, nullable));
            if !self.eat(&Token::Comma) {
                break;
            }
        }
        if angle {
            self.expect_gt()?;
        } else {
            self.expect(Token::RParen)?;
        }
        Ok(DataType::Struct(Fields::from(fields)))
    }
}
