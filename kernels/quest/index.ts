export {
  planQuestScore,
  QuestScorePlan,
  QUEST_PARAMS,
  type QuestScoreOptions,
  type QuestScoreTensors,
  type QuestScoreCall,
  type QuestScoreMode,
  type GroupReduce,
} from './score.js';
export {
  planQuestBatch,
  QuestBatchPlan,
  questBatchReference,
  questBatchLoopIterations,
  QUEST_BATCH_PARAMS,
  type QuestBatchOptions,
  type QuestBatchTensors,
  type QuestBatchStep,
} from './batch.js';
export {
  planQuestBlock,
  QuestBlockPlan,
  QUEST_BLOCK_PARAMS,
  questBlockLoopIterations,
  type QuestBlockOptions,
  type QuestBlockTensors,
  type QuestBlockCall,
} from './block.js';
export { questBlockScoresReference } from './reference.js';
