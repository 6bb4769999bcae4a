export { planQuestScore, QuestScorePlan, QUEST_PARAMS, type QuestScoreOptions, type QuestScoreTensors, type QuestScoreCall, type QuestScoreMode, type GroupReduce } from './score.js';
export { planQuestBatch, QuestBatchPlan, questBatchReference, questBatchLoopIterations, QUEST_BATCH_PARAMS, type QuestBatchOptions, type QuestBatchTensors, type QuestBatchStep } from './batch.js';
