//! Struct field reads taken out of expressions, so that a `CASE` over nested rows — the
//! Nexmark table's event time, `CASE WHEN event_type = 0 THEN person.dateTime WHEN ...` —
//! chooses between narrow columns instead of filtering whole structs (with every string
//! inside them) once per branch.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, DFSchemaRef};
use datafusion::logical_expr::{Expr, ExprSchemable};

use crate::error::Result;

/// Expressions rewritten to read their struct fields from columns computed first.
#[derive(Debug, Clone)]
pub struct HoistedFieldReads {
    /// The columns to compute first: every input column as it is, then one column per
    /// distinct field read.
    pub first: Vec<Expr>,
    /// The schema of `first`'s columns.
    pub widened: DFSchemaRef,
    /// The expressions, reading `widened`.
    pub exprs: Vec<Expr>,
}

/// Prefix of the columns that hold a field read.
const FIELD_COLUMN: &str = "__runnel_field_";

/// Whether `expr` reads a field of a struct column (`get_field(column, 'name', ...)`,
/// through any depth of nesting): what is taken out.
fn is_field_read(expr: &Expr) -> bool {
    let Expr::ScalarFunction(call) = expr else {
        return false;
    };
    let Some((base, names)) = call.args.split_first() else {
        return false;
    };
    call.func.name() == "get_field"
        && names.iter().all(|name| matches!(name, Expr::Literal(..)))
        && (matches!(base, Expr::Column(_)) || is_field_read(base))
}

/// `exprs` (over `schema`) with each field read that sits inside a `CASE` taken out into a
/// column of its own; `None` when there is none (the expressions are evaluated as they
/// are).
pub fn hoist_field_reads(exprs: &[Expr], schema: &DFSchema) -> Result<Option<HoistedFieldReads>> {
    let mut reads: Vec<Expr> = Vec::new();
    let mut rewritten = Vec::with_capacity(exprs.len());
    for expr in exprs {
        let expr = expr.clone().transform_down(|node| {
            if !matches!(node, Expr::Case(_)) {
                return Ok(Transformed::no(node));
            }
            // Inside a CASE: every outermost field read becomes a column.
            let case = node.transform_down(|inner| {
                if !is_field_read(&inner) {
                    return Ok(Transformed::no(inner));
                }
                let index = match reads.iter().position(|r| *r == inner) {
                    Some(index) => index,
                    None => {
                        reads.push(inner);
                        reads.len() - 1
                    }
                };
                let column =
                    Expr::Column(Column::new_unqualified(format!("{FIELD_COLUMN}{index}")));
                Ok(Transformed::new(column, true, TreeNodeRecursion::Jump))
            })?;
            Ok(Transformed::new(
                case.data,
                case.transformed,
                TreeNodeRecursion::Jump,
            ))
        })?;
        rewritten.push(expr.data);
    }
    if reads.is_empty() {
        return Ok(None);
    }
    let mut first: Vec<Expr> = schema.columns().into_iter().map(Expr::Column).collect();
    let mut fields: Vec<_> = schema
        .iter()
        .map(|(qualifier, field)| (qualifier.cloned(), field.clone()))
        .collect();
    for (index, read) in reads.into_iter().enumerate() {
        let name = format!("{FIELD_COLUMN}{index}");
        let (_, field) = read.to_field(schema)?;
        fields.push((None, Arc::new(field.as_ref().clone().with_name(&name))));
        first.push(read.alias(name));
    }
    let widened = Arc::new(DFSchema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )?);
    Ok(Some(HoistedFieldReads {
        first,
        widened,
        exprs: rewritten,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
    use datafusion::functions::core::expr_fn::get_field;
    use datafusion::logical_expr::{col, lit, when};

    #[test]
    fn field_reads_inside_a_case_become_columns_computed_first() {
        let row = DataType::Struct(Fields::from(vec![
            Field::new("t", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let schema = DFSchema::try_from(Schema::new(vec![
            Field::new("kind", DataType::Int32, true),
            Field::new("a", row.clone(), true),
            Field::new("b", row, true),
        ]))
        .unwrap();
        let time = when(col("kind").eq(lit(0)), get_field(col("a"), "t"))
            .otherwise(get_field(col("b"), "t"))
            .unwrap();
        // A field read outside a CASE stays where it is.
        let name = get_field(col("a"), "name");
        let hoisted = hoist_field_reads(&[time, name.clone()], &schema)
            .unwrap()
            .expect("two reads to take out");
        assert_eq!(hoisted.first.len(), 5, "3 columns, then a.t and b.t");
        assert_eq!(hoisted.widened.field(3).name(), "__runnel_field_0");
        assert_eq!(hoisted.widened.field(3).data_type(), &DataType::Int64);
        assert_eq!(
            hoisted.exprs[0].to_string(),
            "CASE WHEN kind = Int32(0) THEN __runnel_field_0 ELSE __runnel_field_1 END"
        );
        assert_eq!(hoisted.exprs[1], name);
        // Nothing to take out: evaluated as they are.
        assert!(hoist_field_reads(&[col("kind")], &schema)
            .unwrap()
            .is_none());
    }
}
