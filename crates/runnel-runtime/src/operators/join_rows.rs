//! Rows of a join's two sides: an outer join's unmatched rows padded with NULLs, which
//! candidate pairs pass the residual condition, and both sides' held rows as one
//! checkpoint batch and back.

/// Whether each row of `joined` (candidate pairs) passes the join's `residual` condition
/// (every row does without one; NULL counts as false).
pub(crate) fn residual_passes(
    residual: Option<&std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
    joined: &datafusion::arrow::record_batch::RecordBatch,
) -> datafusion::error::Result<Vec<bool>> {
    Ok(match residual {
        Some(residual) if joined.num_rows() > 0 => crate::expr::predicate(residual, joined)?
            .iter()
            .map(|passed| passed == Some(true))
            .collect(),
        _ => vec![true; joined.num_rows()],
    })
}

/// `rows` of one `side` of a join, with NULLs for the `other` side's columns, in the
/// join's output `schema` (an outer join's unmatched rows).
pub(crate) fn padded(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    side: crate::operator::Side,
    rows: &datafusion::arrow::record_batch::RecordBatch,
    other: &datafusion::arrow::datatypes::SchemaRef,
) -> crate::error::Result<datafusion::arrow::record_batch::RecordBatch> {
    use datafusion::arrow::array::{new_null_array, ArrayRef};
    let nulls: Vec<ArrayRef> = other
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), rows.num_rows()))
        .collect();
    let columns = match side {
        crate::operator::Side::Left => [rows.columns().to_vec(), nulls].concat(),
        crate::operator::Side::Right => [nulls, rows.columns().to_vec()].concat(),
    };
    datafusion::arrow::record_batch::RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
        crate::error::RuntimeError::Operator {
            operator: "join".into(),
            source: e.into(),
        }
    })
}

/// A two-input operator's held rows of both sides as one checkpoint batch: the left
/// columns, the right columns (NULL on the other side's rows), and `__side` (0 for left
/// rows, 1 for right ones).
pub(crate) fn two_sided_state(
    left_schema: &datafusion::arrow::datatypes::SchemaRef,
    left: &[datafusion::arrow::record_batch::RecordBatch],
    right_schema: &datafusion::arrow::datatypes::SchemaRef,
    right: &[datafusion::arrow::record_batch::RecordBatch],
) -> crate::error::Result<datafusion::arrow::record_batch::RecordBatch> {
    use datafusion::arrow::array::Int8Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let error = |e: datafusion::arrow::error::ArrowError| {
        crate::error::RuntimeError::Checkpoint(e.to_string())
    };
    let nullable = |schema: &Schema| -> Vec<Field> {
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect()
    };
    let pair = Arc::new(Schema::new(
        [nullable(left_schema), nullable(right_schema)].concat(),
    ));
    let left = datafusion::arrow::compute::concat_batches(left_schema, left).map_err(error)?;
    let right = datafusion::arrow::compute::concat_batches(right_schema, right).map_err(error)?;
    let left = padded(&pair, crate::operator::Side::Left, &left, right_schema)?;
    let right = padded(&pair, crate::operator::Side::Right, &right, left_schema)?;
    let rows = datafusion::arrow::compute::concat_batches(&pair, [&left, &right]).map_err(error)?;
    let mut fields: Vec<Field> = nullable(&pair);
    fields.push(Field::new("__side", DataType::Int8, false));
    let mut columns = rows.columns().to_vec();
    let sides =
        std::iter::repeat_n(0i8, left.num_rows()).chain(std::iter::repeat_n(1i8, right.num_rows()));
    columns.push(Arc::new(Int8Array::from_iter_values(sides)));
    datafusion::arrow::record_batch::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(error)
}

/// The left and right rows of a [`two_sided_state`] batch, in their own schemas.
pub(crate) fn split_two_sided(
    state: &datafusion::arrow::record_batch::RecordBatch,
    left_schema: &datafusion::arrow::datatypes::SchemaRef,
    right_schema: &datafusion::arrow::datatypes::SchemaRef,
) -> crate::error::Result<(
    datafusion::arrow::record_batch::RecordBatch,
    datafusion::arrow::record_batch::RecordBatch,
)> {
    use datafusion::arrow::array::{AsArray, BooleanArray};
    use datafusion::arrow::datatypes::Int8Type;
    let error = |e: datafusion::arrow::error::ArrowError| {
        crate::error::RuntimeError::Checkpoint(e.to_string())
    };
    let (l, r) = (left_schema.fields().len(), right_schema.fields().len());
    if state.num_columns() != l + r + 1 {
        return Err(crate::error::RuntimeError::Checkpoint(
            "a join's checkpoint state does not match the join".into(),
        ));
    }
    let sides = state.column(l + r).as_primitive::<Int8Type>();
    let pick = |side: i8,
                range: std::ops::Range<usize>,
                schema: &datafusion::arrow::datatypes::SchemaRef| {
        let mask: BooleanArray = sides.iter().map(|s| Some(s == Some(side))).collect();
        let columns = state.columns()[range]
            .iter()
            .map(|c| datafusion::arrow::compute::filter(c, &mask))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(error)?;
        datafusion::arrow::record_batch::RecordBatch::try_new(schema.clone(), columns)
            .map_err(error)
    };
    Ok((
        pick(0, 0..l, left_schema)?,
        pick(1, l..l + r, right_schema)?,
    ))
}
