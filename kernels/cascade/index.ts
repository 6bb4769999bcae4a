export { planPagedRows, PagedRowsPlan, rowsLoopCost, ROWS_PER_INVOCATION } from './rows.js';
