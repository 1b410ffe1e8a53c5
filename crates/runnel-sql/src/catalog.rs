//! The catalog: tables and views a session has declared, resolved to Arrow schemas and
//! DataFusion expressions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::common::{DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Expr, LogicalPlan};

use crate::error::{Result, SqlError};

/// A declared table: what its connector reads or writes, and how its rows get event time.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    /// Columns the connector decodes from (or encodes into) records, in declaration order.
    pub physical_schema: SchemaRef,
    /// Every column as queries see it: physical and computed, in declaration order.
    pub schema: SchemaRef,
    /// One expression per column of `schema`, over `physical_schema`: a column reference
    /// for physical columns, the computing expression for computed ones.
    pub row_exprs: Vec<Expr>,
    /// The event-time column and its watermark, when the table declares one.
    pub watermark: Option<WatermarkDef>,
    pub primary_key: Vec<String>,
    /// Columns of `physical_schema` the connector or format fills from what it knows of
    /// each record (`METADATA` columns), not from the record's fields.
    pub metadata: Vec<MetadataColumn>,
    /// `PARTITIONED BY` columns (each a column of the table).
    pub partition_keys: Vec<String>,
    /// The `WITH` options, by key.
    pub options: BTreeMap<String, String>,
    /// Fields the connector guarantees never repeat across the table's rows, NULLs aside
    /// (Nexmark's person and auction ids), each as a path: a column, then the nested
    /// fields inside it (`["auction", "id"]`). Filled from the connector when the table is
    /// declared; it lets state kept per such a value be freed once its one row is gone
    /// (see `planner::finished_groups`).
    pub unique_fields: Vec<Vec<String>>,
    /// Struct columns of `physical_schema` of which a plan reads only some fields (Flink's
    /// nested projection push-down): the column's name → the fields it reads, none when
    /// it reads the column not at all. Empty when the table is declared; the planner sets
    /// it on a plan's copy of the table (see `planner::read_fields`). A format may leave
    /// the other fields (and columns) NULL instead of decoding them.
    pub read_fields: BTreeMap<String, Vec<String>>,
}

/// A `METADATA` column: `name TYPE METADATA FROM 'key' [VIRTUAL]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    /// The column's name in the table.
    pub column: String,
    /// What the connector or format calls the value (`offset`, `value.source.timestamp`).
    pub key: String,
    /// Read-only: never written by a sink.
    pub is_virtual: bool,
}

/// Formats whose records are changes (inserts, updates, deletes) rather than rows.
pub const CHANGELOG_FORMATS: &[&str] = &["debezium-json"];

/// `WATERMARK FOR column AS expr`, resolved.
#[derive(Debug, Clone)]
pub struct WatermarkDef {
    /// Name and index of the event-time column in [`TableDef::schema`].
    pub column: String,
    pub column_index: usize,
    /// The watermark expression over [`TableDef::schema`]: the source's watermark is the
    /// largest value it has produced over the rows read (per partition).
    pub expr: Expr,
}

impl WatermarkDef {
    /// The watermark expression as SQL (`ts - INTERVAL '5' SECOND`), for `DESCRIBE`.
    pub fn expr_sql(&self) -> String {
        datafusion::sql::unparser::expr_to_sql(&self.expr)
            .map_or_else(|_| self.expr.to_string(), |sql| sql.to_string())
    }
}

/// An Arrow type by the SQL name a table declares it with (`BIGINT`, `TIMESTAMP(3)`,
/// `DECIMAL(12, 2)`), for `DESCRIBE`; other types by their Arrow name.
pub fn sql_type_name(data_type: &DataType) -> String {
    use datafusion::arrow::datatypes::TimeUnit;
    let precision = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    };
    match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING".into(),
        DataType::Binary | DataType::LargeBinary => "BYTES".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(unit, None) => format!("TIMESTAMP({})", precision(unit)),
        DataType::Timestamp(unit, Some(_)) => format!("TIMESTAMP_LTZ({})", precision(unit)),
        other => other.to_string(),
    }
}

impl TableDef {
    /// The `'connector'` option.
    pub fn connector(&self) -> Option<&str> {
        self.options.get("connector").map(String::as_str)
    }

    /// Whether reading the table gives an updating stream: its records are changes
    /// (`'format' = 'debezium-json'`) or upserts by key (`'connector' = 'upsert-kafka'`).
    pub fn is_changelog(&self) -> bool {
        let format = self
            .options
            .get("value.format")
            .or_else(|| self.options.get("format"));
        self.connector() == Some("upsert-kafka")
            || format.is_some_and(|f| CHANGELOG_FORMATS.contains(&f.as_str()))
    }

    /// The metadata column named `column`, if it is one.
    pub fn metadata_of(&self, column: &str) -> Option<&MetadataColumn> {
        self.metadata.iter().find(|m| m.column == column)
    }

    /// The columns a record's own fields hold: the physical columns but the metadata ones.
    pub fn payload_schema(&self) -> SchemaRef {
        let fields: Vec<_> = self
            .physical_schema
            .fields()
            .iter()
            .filter(|f| self.metadata_of(f.name()).is_none())
            .cloned()
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The indexes in `physical_schema` of the primary key's columns.
    pub fn primary_key_indexes(&self) -> Vec<usize> {
        self.primary_key
            .iter()
            .filter_map(|k| self.schema.index_of(k).ok())
            .collect()
    }

    /// The columns an `INSERT INTO` the table writes: its physical columns but the
    /// `VIRTUAL` metadata ones (read-only, as in Flink).
    pub fn written_schema(&self) -> SchemaRef {
        let virtual_columns: Vec<&str> = self
            .metadata
            .iter()
            .filter(|m| m.is_virtual)
            .map(|m| m.column.as_str())
            .collect();
        if virtual_columns.is_empty() {
            return self.physical_schema.clone();
        }
        Arc::new(Schema::new(
            self.physical_schema
                .fields()
                .iter()
                .filter(|f| !virtual_columns.contains(&f.name().as_str()))
                .cloned()
                .collect::<Vec<_>>(),
        ))
    }

    /// Whether some columns are computed (such a table cannot be written to).
    pub fn has_computed_columns(&self) -> bool {
        self.schema.fields().len() != self.physical_schema.fields().len()
            || self.row_exprs.iter().any(|e| !matches!(e, Expr::Column(_)))
    }

    /// The physical schema as a DataFusion schema, for planning computed columns.
    pub fn physical_df_schema(&self) -> DFSchemaRef {
        // Unqualified fields never collide: column names are unique per table.
        Arc::new(
            DFSchema::try_from(self.physical_schema.as_ref().clone())
                .unwrap_or_else(|_| DFSchema::empty()),
        )
    }

    /// The full schema as a DataFusion schema, for planning the watermark expression.
    pub fn df_schema(&self) -> DFSchemaRef {
        Arc::new(
            DFSchema::try_from(self.schema.as_ref().clone()).unwrap_or_else(|_| DFSchema::empty()),
        )
    }
}

/// A declared view: a query planned once, inlined wherever the view is used.
#[derive(Debug, Clone)]
pub struct ViewDef {
    pub name: String,
    pub plan: LogicalPlan,
}

/// Tables and views by name (names compare case-insensitively, as in Flink's default).
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    tables: HashMap<String, Arc<TableDef>>,
    views: HashMap<String, Arc<ViewDef>>,
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Catalog {
    /// Registers a table; fails if a table or view of that name exists.
    pub fn add_table(&mut self, table: TableDef) -> Result<()> {
        if self.contains(&table.name) {
            return Err(SqlError::DuplicateTable(table.name));
        }
        self.tables.insert(key(&table.name), Arc::new(table));
        Ok(())
    }

    /// Registers a view; fails if a table or view of that name exists.
    pub fn add_view(&mut self, view: ViewDef) -> Result<()> {
        if self.contains(&view.name) {
            return Err(SqlError::DuplicateTable(view.name));
        }
        self.views.insert(key(&view.name), Arc::new(view));
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tables.contains_key(&key(name)) || self.views.contains_key(&key(name))
    }

    pub fn table(&self, name: &str) -> Option<Arc<TableDef>> {
        self.tables.get(&key(name)).cloned()
    }

    pub fn view(&self, name: &str) -> Option<Arc<ViewDef>> {
        self.views.get(&key(name)).cloned()
    }

    /// A table that must exist, with an error naming the known ones.
    pub fn require_table(&self, name: &str) -> Result<Arc<TableDef>> {
        self.table(name).ok_or_else(|| SqlError::UnknownTable {
            name: name.to_string(),
            known: self.names(),
        })
    }

    /// Names of every table and view, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tables
            .values()
            .map(|t| t.name.clone())
            .chain(self.views.values().map(|v| v.name.clone()))
            .collect();
        names.sort();
        names
    }
}

/// Builds the physical schema of a set of fields, checking that a time column is usable.
pub(crate) fn is_timestamp(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(_, _))
}

/// The schema holding `fields`.
pub(crate) fn schema_of(fields: Vec<datafusion::arrow::datatypes::Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}
