export { planQuestScore, QuestScorePlan, QUEST_PARAMS, type QuestScoreOptions, type QuestScoreTensors, type QuestScoreCall, type QuestScoreMode, type GroupReduce } from './score.js';
