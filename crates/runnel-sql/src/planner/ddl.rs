//! Declaring tables: `CREATE TABLE` resolved against the catalog — columns, computed
//! columns, the watermark (planned and type-checked by DataFusion) and the options.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::builder::LogicalTableSource;
use datafusion::logical_expr::expr_rewriter::unnormalize_cols;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::planner::{PlannerContext, SqlToRel};

use crate::catalog::{is_timestamp, schema_of, Catalog, MetadataColumn, TableDef, WatermarkDef};
use crate::error::{Result, SqlError};
use crate::parser::{ColumnKind, CreateTable};

use super::StreamPlanner;

impl StreamPlanner {
    pub fn create_table(&self, catalog: &Catalog, table: CreateTable) -> Result<TableDef> {
        let invalid = |message: String| SqlError::InvalidTable {
            table: table.name.clone(),
            message,
        };
        let physical_fields: Vec<Field> = table
            .columns
            .iter()
            .filter_map(|c| match &c.kind {
                ColumnKind::Physical {
                    data_type,
                    nullable,
                } => Some(Field::new(&c.name, data_type.clone(), *nullable)),
                ColumnKind::Metadata { data_type, .. } => {
                    Some(Field::new(&c.name, data_type.clone(), true))
                }
                ColumnKind::Computed(_) => None,
            })
            .collect();
        let metadata: Vec<MetadataColumn> = table
            .columns
            .iter()
            .filter_map(|c| match &c.kind {
                ColumnKind::Metadata {
                    key, is_virtual, ..
                } => Some(MetadataColumn {
                    column: c.name.clone(),
                    key: key.clone().unwrap_or_else(|| c.name.clone()),
                    is_virtual: *is_virtual,
                }),
                _ => None,
            })
            .collect();
        if physical_fields.len() == metadata.len() {
            return Err(invalid("a table needs at least one physical column".into()));
        }
        if let Some(missing) = table
            .primary_key
            .iter()
            .find(|k| !physical_fields.iter().any(|f| f.name() == *k))
        {
            return Err(invalid(format!(
                "PRIMARY KEY names '{missing}', which is no physical column of the table"
            )));
        }
        let physical_schema = schema_of(physical_fields);
        let physical_df = DFSchema::try_from(physical_schema.as_ref().clone())?;

        let context = self.context(catalog);
        let sql_to_rel = SqlToRel::new(&context);
        let mut row_exprs = Vec::with_capacity(table.columns.len());
        for column in &table.columns {
            let expr = match &column.kind {
                ColumnKind::Physical { .. } | ColumnKind::Metadata { .. } => {
                    Expr::Column(Column::from_name(&column.name))
                }
                ColumnKind::Computed(sql) => sql_to_rel
                    .sql_to_expr(
                        sql.as_ref().clone(),
                        &physical_df,
                        &mut PlannerContext::new(),
                    )
                    .map_err(|e| invalid(format!("computed column '{}': {e}", column.name)))?
                    .alias(&column.name),
            };
            row_exprs.push(expr);
        }
        let (row_exprs, schema) = self
            .coerce(&physical_schema, row_exprs)
            .map_err(|e| invalid(format!("computed columns: {e}")))?;

        let watermark = match table.watermark {
            None => None,
            Some(spec) => {
                let column_index = schema.index_of(&spec.column).map_err(|_| {
                    invalid(format!(
                        "WATERMARK FOR names an unknown column '{}'",
                        spec.column
                    ))
                })?;
                if !is_timestamp(schema.field(column_index).data_type()) {
                    return Err(invalid(format!(
                        "WATERMARK FOR column '{}' must be TIMESTAMP(3) or TIMESTAMP_LTZ(3), not {}",
                        spec.column,
                        schema.field(column_index).data_type()
                    )));
                }
                let full_df = DFSchema::try_from(schema.as_ref().clone())?;
                let expr = sql_to_rel
                    .sql_to_expr(spec.expr, &full_df, &mut PlannerContext::new())
                    .map_err(|e| invalid(format!("watermark expression: {e}")))?;
                let (mut exprs, wm_schema) = self
                    .coerce(&schema, vec![expr])
                    .map_err(|e| invalid(format!("watermark expression: {e}")))?;
                if !is_timestamp(wm_schema.field(0).data_type()) {
                    return Err(invalid(format!(
                        "the watermark expression must give a TIMESTAMP, not {}",
                        wm_schema.field(0).data_type()
                    )));
                }
                Some(WatermarkDef {
                    column: spec.column,
                    column_index,
                    expr: exprs.remove(0),
                })
            }
        };
        if let Some(unknown) = table
            .partition_keys
            .iter()
            .find(|k| physical_schema.index_of(k).is_err())
        {
            return Err(invalid(format!(
                "PARTITIONED BY names an unknown column '{unknown}'"
            )));
        }
        Ok(TableDef {
            name: table.name,
            physical_schema,
            schema,
            row_exprs,
            watermark,
            partition_keys: table.partition_keys,
            primary_key: table.primary_key,
            metadata,
            options: table
                .options
                .into_iter()
                .map(|(key, value)| (modern_option_name(key), value))
                .collect::<BTreeMap<_, _>>(),
            unique_fields: Vec::new(),
            read_fields: BTreeMap::new(),
        })
    }

    /// Type-checks `exprs` over `schema` with DataFusion's analyzer (inserting casts), and
    /// returns them with their output schema.
    fn coerce(&self, schema: &SchemaRef, exprs: Vec<Expr>) -> Result<(Vec<Expr>, SchemaRef)> {
        let source = Arc::new(LogicalTableSource::new(schema.clone()));
        let plan = LogicalPlanBuilder::scan("__row", source, None)?
            .project(exprs)?
            .build()?;
        let plan = self.state.analyzer().execute_and_check(
            plan,
            self.state.config_options(),
            |_, _| {},
        )?;
        match plan {
            LogicalPlan::Projection(p) => {
                let schema = Arc::new(p.schema.as_arrow().clone());
                // The expressions run over unqualified table rows.
                Ok((unnormalize_cols(p.expr), schema))
            }
            other => Err(SqlError::Plan(format!(
                "unexpected plan while typing expressions: {other}"
            ))),
        }
    }
}

/// Flink's legacy option names (`'connector.type'`, `'connector.path'`, `'format.type'`,
/// still in published suites such as Nexmark's) as today's.
fn modern_option_name(key: String) -> String {
    match key.as_str() {
        "connector.type" => "connector".into(),
        "connector.path" => "path".into(),
        "connector.topic" => "topic".into(),
        "format.type" => "format".into(),
        _ => key,
    }
}
